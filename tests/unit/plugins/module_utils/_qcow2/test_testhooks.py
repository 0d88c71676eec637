# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The test-only hooks every write, truncate and flush of BlockFile reports to."""

from __future__ import annotations

import os


IO_CHILD = """
import sys
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.fileio import BlockFile
f = BlockFile(sys.argv[1], create=True)
for i in range(4):
    f.pwrite(b"d" * 512, i * 512)
f.flush()
f.close()
"""


def test_every_write_truncate_and_flush_is_counted(tmp_path):
    from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import testhooks
    from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.fileio import BlockFile
    f = BlockFile(str(tmp_path / "f"), create=True)
    before = testhooks.io_event_count()
    f.pwrite(b"d" * 512, 0)
    f.pwritev([b"e" * 512, b"f" * 512], 512)
    f.truncate(4096)
    f.flush()
    assert f.pread(3, 0) == b"ddd"  # reads are not events
    f.close()
    assert testhooks.io_event_count() - before == 4


def test_the_hold_hook_waits_before_io_while_its_file_exists(tmp_path):
    import subprocess
    import sys
    import time
    hold = tmp_path / "hold"
    hold.touch()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), BACKINGCHAIN_QCOW2_IO_HOLD=str(hold))
    env.pop("BACKINGCHAIN_QCOW2_CRASH_AT", None)
    child = subprocess.Popen([sys.executable, "-c", IO_CHILD, str(tmp_path / "f")], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert child.poll() is None  # held at its first write
        assert not (tmp_path / "f").exists() or (tmp_path / "f").stat().st_size == 0
        hold.unlink()
        child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0
    assert (tmp_path / "f").read_bytes() == b"d" * 2048
