# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The records the engine's operations return through api.py: what a plan says will happen, what a run did.

Kept apart from the operations so that api.py can name them without importing every operation at start-up.
Plain namedtuples, each field's type in a comment: typing.NamedTuple compiles every annotation at import, which
cost more start-up time than all the records are worth.
"""

from __future__ import annotations

import collections


class ChainEntry(collections.namedtuple("ChainEntry", (
    "filename",  # str
    "format",  # str
    "virtual_size",  # int
    "backing_filename",  # Optional[str]
    "backing_format",  # Optional[str]
))):
    """One image of a chain as a diff shows it: what a change of the chain can change."""

    __slots__ = ()


def chain_entry(info: dict) -> ChainEntry:
    """The ChainEntry of one qemu-img info dict."""
    return ChainEntry(info["filename"], info["format"], info["virtual-size"], info.get("backing-filename"),
                      info.get("backing-filename-format"))


class CommitPlan(collections.namedtuple("CommitPlan", (
    "changed",  # bool
    "top",  # str
    "base",  # Optional[str]
    "committed",  # List[str]; the images that leave the chain (top stays when it is the active image)
    "removed",  # List[str]; what remove_committed will delete
    "bytes_copied",  # Optional[int]; guest bytes copied or zeroed into base (None: a plan made with measure=False)
    "msg",  # Optional[str]; why nothing changes, when nothing does
    "top_depth",  # Optional[int]
    "base_depth",  # Optional[int]
    "base_size",  # Optional[int]; base's virtual size afterwards (it grows to top's)
    "chain",  # List[dict]; qemu-img info --backing-chain of path as it is
    "chain_after",  # List[ChainEntry]; path's chain once committed, backing names as they will be recorded
))):
    """What a commit will do, read from the chain without writing anything."""

    __slots__ = ()


class CommitResult(collections.namedtuple("CommitResult", (
    "changed",  # bool
    "top",  # str
    "base",  # Optional[str]
    "committed",  # List[str]
    "removed",  # List[str]
    "bytes_copied",  # int
    "msg",  # Optional[str]
    "duration",  # float
))):
    """What a commit did."""

    __slots__ = ()


class RebasePlan(collections.namedtuple("RebasePlan", (
    "changed",  # bool
    "old_backing",  # str
    "old_format",  # Optional[str]
    "new_backing",  # str
    "new_format",  # Optional[str]
    "header_only",  # bool
    "bytes_copied",  # Optional[int]; what the copy writes; an upper bound unless ``exact`` (None: a plan made with
    # measure=False)
    "exact",  # bool; bytes_copied is what the real run writes (see qcow2_rebase's documentation)
    "chain",  # List[dict]; qemu-img info of path's chain as it is (of path alone when its backing chain cannot open)
    "chain_after",  # List[ChainEntry]; path's chain once rebased (as far as the new backing chain can be read)
))):
    """What a rebase will do, read from the chains without writing anything."""

    __slots__ = ()


class RebaseResult(collections.namedtuple("RebaseResult", (
    "changed",  # bool
    "old_backing",  # str
    "old_format",  # Optional[str]
    "new_backing",  # str
    "new_format",  # Optional[str]
    "header_only",  # bool
    "bytes_copied",  # int
    "duration",  # float
))):
    """What a rebase did."""

    __slots__ = ()


class ConvertPlan(collections.namedtuple("ConvertPlan", (
    "changed",  # bool; always: a convert writes a new image
    "dest",  # str
    "required",  # int; bytes the new image needs on disk (qemu-img measure's "required")
    "bytes_to_copy",  # int; guest data to read from the source
    "compressed",  # bool
))):
    """What a convert will write."""

    __slots__ = ()


class ConvertResult(collections.namedtuple("ConvertResult", (
    "changed",  # bool
    "dest",  # str
    "required",  # int
    "bytes_to_copy",  # int
    "bytes_written",  # int
    "compressed",  # bool
    "duration",  # float
))):
    """What a convert wrote."""

    __slots__ = ()


class BitmapPlan(collections.namedtuple("BitmapPlan", (
    "changed",  # bool
    "actions",  # List[str]; qemu-img bitmap's operations, in order: "add", "enable", "clear", "merge NAME of FILE"...
    "before",  # Optional[dict]; the bitmap as bitmap_ops.describe() shows it, with dirty_bytes; None when absent
    "after",  # Optional[dict]; the same, as it will be
))):
    """What bringing a bitmap to a wanted state will do, read without writing anything."""

    __slots__ = ()


class BitmapResult(collections.namedtuple("BitmapResult", (
    "changed",  # bool
    "actions",  # List[str]
    "before",  # Optional[dict]
    "after",  # Optional[dict]
))):
    """What bringing a bitmap to a wanted state did."""

    __slots__ = ()


class DirtyRanges(collections.namedtuple("DirtyRanges", (
    "bitmap",  # str
    "ranges",  # List[Tuple[int, int]]; (offset, length), sorted, not touching each other
    "dirty_bytes",  # int
    "size",  # int; the virtual size of the image read
    "granularity",  # int; the top image's bitmap's granularity
    "layers",  # List[str]; the images whose bitmaps were merged, top first
))):
    """The guest ranges a bitmap (or the same bitmap across the layers of a chain) marks dirty."""

    __slots__ = ()


class CopyRangesResult(collections.namedtuple("CopyRangesResult", (
    "changed",  # bool
    "dest",  # str
    "backing_file",  # Optional[str]; the name recorded in dest: relative to dest's directory
    "backing_format",  # Optional[str]
    "size",  # int
    "cluster_size",  # int
    "ranges",  # int; the number of ranges after joining the ones that touch
    "bytes_in_ranges",  # int
    "bytes_copied",  # int; data written (in a plan: at most this much: all-zero data is written as zero clusters)
    "bytes_zeroed",  # int; written as zero clusters (in a plan: at least this much)
    "duration",  # float
))):
    """What a copy of ranges into a new layer wrote (or, in a plan, will write)."""

    __slots__ = ()
