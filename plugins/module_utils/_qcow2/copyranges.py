# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Copy the guest view of chosen ranges of a chain into a new qcow2 layer over another image.

The new layer reads the source's view inside the ranges and its backing file's view everywhere else. Every
byte of the ranges is written: a range that reads as zero becomes a zero cluster, never a hole, because a
hole would show whatever the backing file holds there (an older point of a backup chain). The copy goes
through copyview.copy_runs, in whole clusters of the new layer: a cluster the ranges cover only in part is
read as the source's view in the ranges and the backing file's view around them (what it must read after),
so no cluster is written twice and none needs a copy-on-write read. Compressed (compress=True), the data clusters
go through compressed_writer instead, as in convert, and the zero clusters are written the same way.

Reading the source takes qemu's shared read lock, or none with force_share (as qemu-img -U does): for an
image frozen below a running VM's overlay.
"""

from __future__ import annotations

import bisect
import os
import time
import typing

from .bitmap_bits import join_ranges
from .chain import DEFAULT_POLICY, check_backing_reference, detect_format, open_chain
from .copyview import CopyStats, copy_runs, planned_bytes
from .create import CreateOptions
from .errors import InvalidArgumentError
from .newimage import check_destination, new_image, refuse_held
from .paths import same_file
from .records import CopyRangesResult
from .segments import RUN_DATA, RUN_ZERO, layer_runs
from .space import require_space

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import ChainPolicy, Image
    from .copyview import Progress
    from .image import Qcow2Image
    from .segments import Run


def copy_ranges(source: str, dest: str, ranges: typing.Sequence[tuple[int, int]], backing_file: str | None = None,
                backing_format: str | None = None, source_format: str | None = None,
                options: CreateOptions | None = None, force_share: bool = False, policy: ChainPolicy | None = None,
                dry_run: bool = False, progress: Progress | None = None, compress: bool = False) -> CopyRangesResult:
    """Write dest, a new qcow2 image as large as source, over backing_file (None: standalone), holding source's guest
    view in ranges [(offset, length)]; returns a CopyRangesResult (with dry_run: what it would write, before any
    compression). compress: data clusters compressed where that makes them smaller, as qemu-img convert -c."""
    started = time.time()
    policy = policy or DEFAULT_POLICY
    check_destination(dest)
    backing_path = backing_name = None
    if backing_file:
        backing_path = check_backing_reference(backing_file, dest, policy)
        if not os.path.exists(backing_path):
            raise InvalidArgumentError("Backing file %s of %s does not exist" % (backing_path, dest), dest)
        backing_format = backing_format or detect_format(backing_path)
        backing_name = os.path.relpath(os.path.abspath(backing_path), os.path.dirname(os.path.abspath(dest)))
    with open_chain(source, fmt=source_format, force_share=force_share, policy=policy) as chain:
        top = chain.top
        for img in chain.images:
            if same_file(img.path, dest):
                raise InvalidArgumentError("Destination %s is part of the backing chain of the source %s (%s)"
                                           % (dest, source, img.path), dest)
        if backing_path and same_file(backing_path, dest):
            raise InvalidArgumentError("Destination %s would be its own backing file (%s)" % (dest, backing_file), dest)
        refuse_held(dest)
        size = -(-top.size // 512) * 512
        wanted = _checked(ranges, size, source)
        # the source's cluster size unless the caller says (a raw source's is the default)
        opts = CreateOptions(**vars(options)) if options is not None else CreateOptions(cluster_size=top.cluster_size)
        opts.size = size
        opts.backing_file = backing_name
        opts.backing_format = backing_format if backing_name else None
        opts.preallocation = "off"
        opts.validate()
        runs = cluster_runs(top, wanted, opts.cluster_size, size)
        result = CopyRangesResult(True, dest, backing_name, opts.backing_format, size, opts.cluster_size, len(wanted),
                                  sum(end - start for start, end in wanted),
                                  planned_bytes(runs, opts.cluster_size, size),
                                  sum(end - start for start, end, kind in runs if kind == RUN_ZERO), 0.0)
        if dry_run:
            return result
        require_space(dest, result.bytes_copied, "writing %s" % dest)
        with new_image(dest, opts, policy) as out_chain:
            out = out_chain.top
            out.writer.keep_zeroes = True
            view = _InsideRanges(top, out, wanted)
            stats = CopyStats()
            if compress:
                # imported here: its thread pool's import (14-25 ms) is no cost of a plan (check mode)
                from .compressed_writer import copy_runs_compressed
                copy_runs_compressed(view, out, runs, stats, progress, zero_runs="zero")
            else:
                copy_runs(view, out, runs, zero_runs="zero", stats=stats, progress=progress)
    return result._replace(bytes_copied=stats.bytes_written, bytes_zeroed=stats.bytes_zeroed,
                           duration=time.time() - started)


def _checked(ranges: typing.Sequence[tuple[int, int]], size: int, source: str) -> list[tuple[int, int]]:
    pairs = []
    for item in ranges:
        try:
            offset, length = (int(v) for v in item)
        except (TypeError, ValueError):
            raise InvalidArgumentError("A range is a pair (offset, length) of byte counts, not %r" % (item,)) from None
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidArgumentError("Range (%d, %d) lies outside the %d bytes of %s" % (offset, length, size, source),
                                       source)
        pairs.append((offset, offset + length))
    return join_ranges(pairs)


def cluster_runs(top: Image, ranges: list[tuple[int, int]], cs: int, size: int) -> list[Run]:
    """The runs for copy_runs, in whole clusters of the new layer: RUN_ZERO for the clusters the ranges cover
    entirely where the source reads zeros; RUN_DATA for the others (data inside the ranges, or only partly
    covered: read as the source's view in the ranges and the backing file's around them)."""
    windows = join_ranges([(start // cs * cs, min(size, -(-end // cs) * cs)) for start, end in ranges])
    ends = [end for _start, end in ranges]
    data = []
    for window_start, window_end in windows:
        for start, end, kind in layer_runs(top, None, window_start, window_end - window_start):
            if kind == RUN_DATA:
                i = bisect.bisect_right(ends, start)
                while i < len(ranges) and ranges[i][0] < end:
                    data.append((max(start, ranges[i][0]), min(end, ranges[i][1])))
                    i += 1
    for start, end in ranges:
        for edge in (start, end):
            if edge % cs and edge != size:
                data.append((edge, edge + 1))
    covered = iter(join_ranges([(start // cs * cs, min(size, -(-end // cs) * cs)) for start, end in data]))
    runs = []
    pending = next(covered, None)
    for window_start, window_end in windows:  # every covered cluster lies in a window
        pos = window_start
        while pending is not None and pending[0] < window_end:
            start, end = pending
            if start > pos:
                runs.append((pos, start, RUN_ZERO))
            runs.append((start, end, RUN_DATA))
            pos = end
            pending = next(covered, None)
        if pos < window_end:
            runs.append((pos, window_end, RUN_ZERO))
    return runs


class _InsideRanges:
    """A read view that is the source inside the ranges and the new layer's backing file outside them."""

    def __init__(self, source: Image, layer: Qcow2Image, ranges: list[tuple[int, int]]) -> None:
        self.source = source
        self.layer = layer
        self.ranges = ranges
        self.ends = [end for _start, end in ranges]

    def read_into(self, view: memoryview, offset: int) -> None:
        end = offset + len(view)
        pos = offset
        i = bisect.bisect_right(self.ends, offset)
        while pos < end:
            inside = i < len(self.ranges) and self.ranges[i][0] <= pos
            if inside:
                stop = min(end, self.ranges[i][1])
                self.source.read_into(view[pos - offset:stop - offset], pos)
                i += 1
            else:
                stop = min(end, self.ranges[i][0]) if i < len(self.ranges) else end
                self.layer.read_backing_into(view[pos - offset:stop - offset], pos)
            pos = stop
