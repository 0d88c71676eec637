# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Read whole guest views: every byte of a chain (to prove it can be read), and where two views differ.

Only the runs some layer decides with data are read: elsewhere the guest reads zeros by the metadata alone.
Two views of different sizes compare as qemu-img compare (without -s) does: past the shorter one's end the
longer one must read zeros.
"""

from __future__ import annotations

import typing

from .chain import open_chain
from .directio import aligned_bytearray
from .segments import RUN_DATA, layer_runs, sweep
from .view_diff import CHUNK, differing_sectors

if typing.TYPE_CHECKING:
    from .chain import ChainPolicy, Image


def read_view(path: str, force_share: bool = False, policy: ChainPolicy | None = None) -> int:
    """Read every data byte of path's guest view (decompressing, following the chain); the bytes read."""
    with open_chain(path, force_share=force_share, policy=policy) as chain:
        top = chain.top
        buf = memoryview(aligned_bytearray(CHUNK))
        total = 0
        for start, end, kind in layer_runs(top, None, 0, top.size):
            if kind != RUN_DATA:
                continue
            for pos in range(start, end, CHUNK):
                n = min(CHUNK, end - pos)
                top.read_into(buf[:n], pos)
                total += n
        return total


def differing_ranges(first: str, second: str, force_share: bool = False,
                     policy: ChainPolicy | None = None) -> list[tuple[int, int]]:
    """[(offset, length)] of the 512-byte sectors where the two guest views differ (empty: identical)."""
    with open_chain(first, force_share=force_share, policy=policy) as a, \
            open_chain(second, force_share=force_share, policy=policy) as b:
        size = max(a.top.size, b.top.size)
        ranges = [(start, end) for start, end, kinds in sweep(_runs(a.top, size), _runs(b.top, size))
                  if RUN_DATA in kinds]
        found = differing_sectors(_reader(a.top), _reader(b.top), ranges)
    return [(start, end - start) for start, end in found]


def _runs(img: Image, size: int) -> list[tuple[int, int, str]]:
    runs = layer_runs(img, None, 0, min(size, img.size))
    if img.size < size:
        runs.append((img.size, size, "zero"))
    return runs


def _reader(img: Image) -> typing.Callable[[memoryview, int], None]:
    def read(view: memoryview, offset: int) -> None:
        inside = max(0, min(len(view), img.size - offset))
        if inside:
            img.read_into(view[:inside], offset)
        if inside < len(view):
            view[inside:] = bytes(len(view) - inside)
    return read
