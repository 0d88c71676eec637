# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The records the bitmap operations and the range copy return through api.py.

Kept apart from the operations so that api.py can name them without importing every operation at start-up.
"""

from __future__ import annotations

import typing as t


class BitmapPlan(t.NamedTuple):
    """What bringing a bitmap to a wanted state will do, read without writing anything."""

    changed: bool
    actions: t.List[str]  # qemu-img bitmap's operations, in order: "add", "enable", "clear", "merge NAME of FILE"...
    before: t.Optional[dict]  # the bitmap as bitmap_ops.describe() shows it, with dirty_bytes; None when absent
    after: t.Optional[dict]  # the same, as it will be


class BitmapResult(t.NamedTuple):
    """What bringing a bitmap to a wanted state did."""

    changed: bool
    actions: t.List[str]
    before: t.Optional[dict]
    after: t.Optional[dict]


class DirtyRanges(t.NamedTuple):
    """The guest ranges a bitmap (or the same bitmap across the layers of a chain) marks dirty."""

    bitmap: str
    ranges: t.List[t.Tuple[int, int]]  # (offset, length), sorted, not touching each other
    dirty_bytes: int
    size: int  # the virtual size of the image read
    granularity: int  # the top image's bitmap's granularity
    layers: t.List[str]  # the images whose bitmaps were merged, top first


class CopyRangesResult(t.NamedTuple):
    """What a copy of ranges into a new layer wrote (or, in a plan, will write)."""

    changed: bool
    dest: str
    backing_file: t.Optional[str]  # the name recorded in dest: relative to dest's directory
    backing_format: t.Optional[str]
    size: int
    cluster_size: int
    ranges: int  # the number of ranges after joining the ones that touch
    bytes_in_ranges: int
    bytes_copied: int  # data written (in a plan: at most this much: all-zero data is written as zero clusters)
    bytes_zeroed: int  # written as zero clusters (in a plan: at least this much)
    duration: float
