# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Write a chain's guest view as a sparse raw file (qemu-img convert -O raw): a new file beside dest, renamed
over it once complete and flushed. Only data runs are read; a chunk that reads zeros stays a hole."""

from __future__ import annotations

import os
import tempfile
import typing

from .chain import open_chain
from .directio import aligned_bytearray
from .newimage import check_destination, refuse_held
from .paths import remove_stale_temporaries
from .segments import RUN_DATA, data_bytes, layer_runs
from .space import require_space
from .view_diff import CHUNK

if typing.TYPE_CHECKING:
    from .chain import ChainPolicy


def export_raw(source: str, dest: str, policy: ChainPolicy | None = None) -> int:
    """Write dest; the data bytes written."""
    check_destination(dest)
    refuse_held(dest)
    with open_chain(source, policy=policy) as chain:
        top = chain.top
        runs = layer_runs(top, None, 0, top.size)
        require_space(dest, data_bytes(runs), "writing %s" % dest)
        remove_stale_temporaries(dest)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(dest)))
        written = 0
        try:
            with os.fdopen(fd, "r+b") as out:
                out.truncate(top.size)
                buf = aligned_bytearray(CHUNK)
                view = memoryview(buf)
                for start, end, kind in runs:
                    if kind != RUN_DATA:
                        continue
                    for pos in range(start, end, CHUNK):
                        n = min(CHUNK, end - pos)
                        top.read_into(view[:n], pos)
                        if buf[:n].count(0) != n:
                            out.seek(pos)
                            out.write(view[:n])
                            written += n
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return written
