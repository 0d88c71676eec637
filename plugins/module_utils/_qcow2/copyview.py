# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Copying the guest view of a chain into another image, run by run, in large cluster-aligned chunks.

Data runs are widened to whole clusters of the destination and read through the source's full view
(which is exactly what the destination will show there), so every write covers whole clusters and no
copy-on-write read is needed. All-zero clusters are not written: they are skipped or turned into
zero clusters, as the caller asks. A few aligned buffers are reused for the whole copy.
"""

from __future__ import annotations

from .segments import RUN_DATA, RUN_ZERO
from .zeros import zero_bytes

CHUNK = 4 << 20
BUFFERS = 3


class CopyStats:
    def __init__(self):
        self.bytes_read = 0
        self.bytes_written = 0
        self.bytes_zeroed = 0


def planned_bytes(runs, cluster_size, size, zero_runs="skip"):
    """What copy_runs will report as written plus zeroed: exact when zero ranges are zeroed ("zero"), an upper
    bound when they are skipped (which all-zero data clusters are cannot be known without reading them)."""
    total = 0
    for start, end, kind in runs:
        if kind == RUN_ZERO and zero_runs == "zero":
            total += end - start
        elif kind == RUN_DATA:
            total += min(size, -(-end // cluster_size) * cluster_size) - (start // cluster_size) * cluster_size
    return total


def copy_runs(source, dest, runs, zero_runs="skip", chunk=CHUNK, stats=None, progress=None):
    """Copy runs (from segments.layer_runs) of source's view into dest.

    zero_runs: "skip" when dest already reads zeros there (new standalone image), "zero" when dest must be
    told (commit into a base, an image with a backing file).
    """
    stats = stats or CopyStats()
    cs = dest.cluster_size
    chunk = max(cs, (chunk // cs) * cs)
    # Whole clusters go to disk directly from the buffers, in worker threads while the next chunk is read
    # (commit of 512 MiB on the test VM: 0.39 s, against 0.53 s written in line and 0.45-1.0 s through the
    # page cache); the rest still goes through the page cache, whose writeback starts early.
    with dest.file.copy_buffers(BUFFERS, chunk) as ring:
        _copy(source, dest, runs, zero_runs, ring, stats, progress)
    return stats


def _copy(source, dest, runs, zero_runs, ring, stats, progress):
    cs = dest.cluster_size
    chunk = ring.size
    for start, end, kind in runs:
        if kind == RUN_ZERO:
            if zero_runs == "zero":
                dest.write_zeroes(start, end - start)
                stats.bytes_zeroed += end - start
            continue
        if kind != RUN_DATA:
            continue
        pos = (start // cs) * cs
        stop = min(dest.size, -(-end // cs) * cs)
        while pos < stop:
            n = min(chunk, stop - pos)
            buf, first = ring.take(n)
            source.read_into(memoryview(buf)[first:first + n], pos)
            stats.bytes_read += n
            _write_nonzero(dest, buf, first, pos, n, cs, zero_runs, stats)
            if progress is not None:
                progress(pos + n)
            pos += n


def _write_nonzero(dest, buf, first, offset, length, cs, zero_runs, stats):
    """Write the non-zero clusters of buf[first:first+length] (guest offset ``offset``) in as few calls as possible."""
    view = memoryview(buf)
    zero = zero_bytes(cs)
    run_start = None
    pos = 0
    while pos < length:
        n = min(cs, length - pos)
        is_zero = buf.startswith(zero, first + pos, first + pos + n) if n == cs else not any(buf[first + pos:first + pos + n])
        if is_zero:
            if run_start is not None:
                dest.write(offset + run_start, view[first + run_start:first + pos])
                stats.bytes_written += pos - run_start
                run_start = None
            if zero_runs == "zero":
                dest.write_zeroes(offset + pos, n)
                stats.bytes_zeroed += n
        elif run_start is None:
            run_start = pos
        pos += n
    if run_start is not None:
        dest.write(offset + run_start, view[first + run_start:first + length])
        stats.bytes_written += length - run_start
