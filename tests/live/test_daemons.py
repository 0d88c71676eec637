# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/libvirt-up.sh is idempotent: a second run keeps the running daemons."""

from __future__ import annotations

import subprocess
from pathlib import Path

from live_helpers import REPO


def daemon_pids() -> dict:
    return {name: Path("/run/%s.pid" % name).read_text().strip() for name in ("virtlogd", "virtlockd", "libvirtd")}


def test_second_libvirt_up_keeps_the_same_daemons(libvirt_up):
    before = daemon_pids()
    again = subprocess.run(["bash", str(REPO / "scripts/libvirt-up.sh")], capture_output=True, text=True, check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already running") == 3
    assert daemon_pids() == before
    assert all(Path("/proc/%s" % pid).exists() for pid in before.values())
    listing = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all"], capture_output=True, text=True, check=False, timeout=30)
    assert listing.returncode == 0
