# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Writing compressed clusters into a new image, packed byte by byte as qemu's qcow2_alloc_bytes does.

Compressed data of consecutive clusters follows on in the same host cluster, spilling into the next
host cluster when that one is contiguous. Every host cluster holds one reference per compressed
cluster that touches it. Compression runs in worker threads (zlib releases the GIL).
"""

from __future__ import annotations

import os
import typing
from concurrent.futures import ThreadPoolExecutor

from .compression import compress_cluster
from .directio import aligned_bytearray
from .segments import RUN_DATA, RUN_ZERO
from .zeros import zero_bytes

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Image
    from .copyview import CopyStats, Progress
    from .image import Qcow2Image
    from .segments import Run

BATCH_CLUSTERS = 64


class CompressedWriter:
    def __init__(self, img: Qcow2Image) -> None:
        self.img = img
        self.next_byte = 0  # where the next compressed cluster may start; 0 = start a new host cluster

    def _place(self, need: int) -> int:
        img = self.img
        cs, cb = img.geo.cluster_size, img.geo.cluster_bits
        refcounts = img.refcounts
        off = self.next_byte
        if off and off % cs:
            if need <= cs - off % cs:
                refcounts.add(off >> cb, 1)
                self.next_byte = off + need
                return off
            new = refcounts.alloc(1)
            if new == (off >> cb) + 1:
                refcounts.add(off >> cb, 1)  # the data spills into the contiguous next cluster
                self.next_byte = off + need
                return off
            off = new << cb
        else:
            off = refcounts.alloc(1) << cb
        self.next_byte = off + need
        return off

    def write_cluster(self, guest_offset: int, data: bytes, compressed: bytes | None) -> None:
        """Store one whole guest cluster: compressed if that made it smaller, plain otherwise."""
        img = self.img
        if compressed is None:
            img.write(guest_offset, data)
            return
        host = self._place(len(compressed))
        img.file.pwrite(compressed, host)
        entry = img.geo.compressed_entry(host, len(compressed))
        writer = img.writer
        for table, key, idx, s, e in writer._slices(guest_offset, guest_offset + 1):
            words = img.geo.l2_entry_words
            old = table[idx * words]
            writer.release(old, _kind(old, img.geo.extended_l2))
            table[idx * words] = entry
            if img.geo.extended_l2:
                table[idx * 2 + 1] = 0
            img.l2cache.mark_dirty(key)


def _kind(entry: int, extended_l2: bool) -> int:
    from .layout import classify
    return classify(entry, extended_l2)


def copy_runs_compressed(source: Image, dest: Qcow2Image, runs: list[Run], stats: CopyStats, progress: Progress | None = None, zero_runs: str = "skip") -> None:
    """Like copyview.copy_runs, with every data cluster compressed. zero_runs="zero" when dest has a backing file:
    the zero runs and the all-zero clusters of the data runs are then written as zeros, which mask it. The stats
    count guest bytes, as copy_runs does (the file holds fewer)."""
    cs = dest.cluster_size
    writer = CompressedWriter(dest)
    ctype = dest.header.compression_type
    zero = zero_bytes(cs)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start, end, kind in runs:
            if kind == RUN_ZERO and zero_runs == "zero":
                dest.write_zeroes(start, end - start)
                stats.bytes_zeroed += end - start
            if kind != RUN_DATA:
                continue
            pos = (start // cs) * cs
            stop = min(dest.size, -(-end // cs) * cs)
            while pos < stop:
                n = min(BATCH_CLUSTERS * cs, stop - pos)
                buf = aligned_bytearray(n)
                source.read_into(memoryview(buf), pos)
                stats.bytes_read += n
                clusters = []
                for off in range(0, n, cs):
                    part = bytes(buf[off:off + cs])
                    if len(part) < cs:
                        part += bytes(cs - len(part))  # the last cluster of an odd-sized image
                    if part != zero:
                        clusters.append((pos + off, part))
                    elif zero_runs == "zero":
                        length = min(cs, dest.size - pos - off)
                        dest.write_zeroes(pos + off, length)
                        stats.bytes_zeroed += length
                results = pool.map(lambda item: compress_cluster(item[1], ctype), clusters)
                for (guest, part), comp in zip(clusters, results):
                    length = min(cs, dest.size - guest)
                    if comp is None and length < cs:
                        part = part[:length]  # the last cluster of an odd-sized image, stored plain
                    writer.write_cluster(guest, part, comp)
                    stats.bytes_written += length
                if progress is not None:
                    progress(pos + n)
                pos += n
