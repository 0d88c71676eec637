# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The records the engine's operations return through api.py: what a plan says will happen, what a run did.

Kept apart from the operations so that api.py can name them without importing every operation at start-up.
"""

from __future__ import annotations

import typing


class ChainEntry(typing.NamedTuple):
    """One image of a chain as a diff shows it: what a change of the chain can change."""

    filename: str
    format: str
    virtual_size: int
    backing_filename: typing.Optional[str]
    backing_format: typing.Optional[str]


def chain_entry(info: dict) -> ChainEntry:
    """The ChainEntry of one qemu-img info dict."""
    return ChainEntry(info["filename"], info["format"], info["virtual-size"], info.get("backing-filename"),
                      info.get("backing-filename-format"))


class CommitPlan(typing.NamedTuple):
    """What a commit will do, read from the chain without writing anything."""

    changed: bool
    top: str
    base: typing.Optional[str]
    committed: typing.List[str]  # the images that leave the chain (top stays when it is the active image)
    removed: typing.List[str]  # what remove_committed will delete
    bytes_copied: int  # guest bytes copied or zeroed into base
    msg: typing.Optional[str]  # why nothing changes, when nothing does
    top_depth: typing.Optional[int]
    base_depth: typing.Optional[int]
    base_size: typing.Optional[int]  # base's virtual size afterwards (it grows to top's)
    chain: typing.List[dict]  # qemu-img info --backing-chain of path as it is
    chain_after: typing.List[ChainEntry]  # path's chain once committed, backing names as they will be recorded


class CommitResult(typing.NamedTuple):
    """What a commit did."""

    changed: bool
    top: str
    base: typing.Optional[str]
    committed: typing.List[str]
    removed: typing.List[str]
    bytes_copied: int
    msg: typing.Optional[str]
    duration: float


class RebasePlan(typing.NamedTuple):
    """What a rebase will do, read from the chains without writing anything."""

    changed: bool
    old_backing: str
    old_format: typing.Optional[str]
    new_backing: str
    new_format: typing.Optional[str]
    header_only: bool
    bytes_copied: int  # what the copy writes; an upper bound unless ``exact``
    exact: bool  # bytes_copied is what the real run writes (see qcow2_rebase's documentation)
    chain: typing.List[dict]  # qemu-img info of path's chain as it is (of path alone when its backing chain cannot open)
    chain_after: typing.List[ChainEntry]  # path's chain once rebased (as far as the new backing chain can be read)


class RebaseResult(typing.NamedTuple):
    """What a rebase did."""

    changed: bool
    old_backing: str
    old_format: typing.Optional[str]
    new_backing: str
    new_format: typing.Optional[str]
    header_only: bool
    bytes_copied: int
    duration: float


class ConvertPlan(typing.NamedTuple):
    """What a convert will write."""

    changed: bool  # always: a convert writes a new image
    dest: str
    required: int  # bytes the new image needs on disk (qemu-img measure's "required")
    bytes_to_copy: int  # guest data to read from the source
    compressed: bool


class ConvertResult(typing.NamedTuple):
    """What a convert wrote."""

    changed: bool
    dest: str
    required: int
    bytes_to_copy: int
    bytes_written: int
    compressed: bool
    duration: float


class BitmapPlan(typing.NamedTuple):
    """What bringing a bitmap to a wanted state will do, read without writing anything."""

    changed: bool
    actions: typing.List[str]  # qemu-img bitmap's operations, in order: "add", "enable", "clear", "merge NAME of FILE"...
    before: typing.Optional[dict]  # the bitmap as bitmap_ops.describe() shows it, with dirty_bytes; None when absent
    after: typing.Optional[dict]  # the same, as it will be


class BitmapResult(typing.NamedTuple):
    """What bringing a bitmap to a wanted state did."""

    changed: bool
    actions: typing.List[str]
    before: typing.Optional[dict]
    after: typing.Optional[dict]


class DirtyRanges(typing.NamedTuple):
    """The guest ranges a bitmap (or the same bitmap across the layers of a chain) marks dirty."""

    bitmap: str
    ranges: typing.List[typing.Tuple[int, int]]  # (offset, length), sorted, not touching each other
    dirty_bytes: int
    size: int  # the virtual size of the image read
    granularity: int  # the top image's bitmap's granularity
    layers: typing.List[str]  # the images whose bitmaps were merged, top first


class CopyRangesResult(typing.NamedTuple):
    """What a copy of ranges into a new layer wrote (or, in a plan, will write)."""

    changed: bool
    dest: str
    backing_file: typing.Optional[str]  # the name recorded in dest: relative to dest's directory
    backing_format: typing.Optional[str]
    size: int
    cluster_size: int
    ranges: int  # the number of ranges after joining the ones that touch
    bytes_in_ranges: int
    bytes_copied: int  # data written (in a plan: at most this much: all-zero data is written as zero clusters)
    bytes_zeroed: int  # written as zero clusters (in a plan: at least this much)
    duration: float
