# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qemu-img measure -O qcow2: the bytes a new image needs (qcow2_measure, qcow2_calc_prealloc_size)."""

from __future__ import annotations

import errno
import os
import typing

from . import constants as C
from .create import COMPAT_VERSIONS, CreateOptions
from .image import DATA, ZERO, Extent
from .refcount.block import RefBlockCodec
from .segments import RUN_DATA, layer_runs

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Image
    from .image import Qcow2Image
    from .segments import Run


def refcount_metadata_size(clusters: int, cluster_size: int, refcount_order: int) -> int:
    """Refcount table + block bytes needed to count ``clusters`` clusters and themselves (fixed point)."""
    blocks_per_table_cluster = cluster_size // 8
    refcounts_per_block = cluster_size * 8 // (1 << refcount_order)
    table = blocks = n = 0
    while True:
        last = n
        blocks = -(-(clusters + table + blocks) // refcounts_per_block)
        table = -(-blocks // blocks_per_table_cluster)
        n = clusters + blocks + table
        if n == last:
            return (blocks + table) * cluster_size


def prealloc_size(virtual_size: int, cluster_size: int, refcount_order: int, extended_l2: bool = False) -> int:
    """Size of a fully allocated image: header, L1, L2, refcounts, data."""
    aligned = -(-virtual_size // cluster_size) * cluster_size
    l2e = 16 if extended_l2 else 8
    meta = cluster_size
    nl2e = aligned // cluster_size
    nl2e = -(-nl2e // (cluster_size // l2e)) * (cluster_size // l2e)
    meta += nl2e * l2e
    nl1e = nl2e * l2e // cluster_size
    nl1e = -(-nl1e // (cluster_size // 8)) * (cluster_size // 8)
    meta += nl1e * 8
    meta += refcount_metadata_size((meta + aligned) // cluster_size, cluster_size, refcount_order)
    return meta + aligned


def _bitmaps_size(img: Image, cluster_size: int) -> int:
    total = 0
    directory = 0
    for b in img.bitmap_trust.loaded():  # qemu measures every bitmap it loads, in use or not
        bits = -(-img.size // b.granularity)
        clusters = -(-(-(-bits // 8)) // cluster_size)
        total += clusters * cluster_size
        total += -(-clusters * 8 // cluster_size) * cluster_size
        directory += (24 + len(b.name.encode("utf-8")) + 7) & ~7
    return total + -(-directory // cluster_size) * cluster_size


def measure_chain(top: Image, stop: Image | None = None, options: CreateOptions | None = None, runs: list[Run] | None = None) -> dict:
    """Measure copying top's view (down to stop) into a new qcow2 image with options.

    runs: layer_runs(top, stop, 0, top.size) when the caller has them already; they are what qemu counts
    too unless a layer looks metadata-preallocated (then its holes are walked again, as qemu sees them).
    """
    opts = options or CreateOptions()
    cs = opts.cluster_size
    order = opts.refcount_bits.bit_length() - 1
    size = top.size
    qemu_top, qemu_stop = _as_qemu_reports(top, stop)
    if runs is None or _any_holes(qemu_top, qemu_stop):
        runs = layer_runs(qemu_top, qemu_stop, 0, size)
    clusters = 0
    last = -1  # runs are sorted and disjoint: count each cluster once though two runs may share it
    for start, end, kind in runs:
        if kind == RUN_DATA:
            first, final = max(start // cs, last + 1), -(-end // cs) - 1
            if final >= first:
                clusters += final - first + 1
                last = final
    required_data = clusters * cs
    if opts.preallocation in ("falloc", "full"):
        required_data = -(-size // cs) * cs  # every cluster is written (qcow2_measure)
    fully = prealloc_size(size, cs, order, opts.extended_l2)
    aligned = -(-size // cs) * cs  # qemu counts whole clusters on both sides of the subtraction
    result = {"required": fully - aligned + required_data, "fully-allocated": fully}
    if COMPAT_VERSIONS[opts.compat] >= 3 and top.format_name == "qcow2" and top.header.version >= 3:
        result["bitmaps"] = _bitmaps_size(top, cs)
    return result


class _Layer:
    """A layer as qemu's block status reports it to measure.

    qemu takes a qcow2 image for metadata-preallocated when it has clearly more clusters in use than its file
    really allocates (qcow2_detect_metadata_preallocation), and then asks the file about each data cluster:
    where the file has a hole, the cluster reads zeros and is not counted. Other layers report as they are.
    """

    def __init__(self, img: Image, backing: _Layer | None) -> None:
        self.img = img
        self.backing = backing
        self.size = img.size
        self.format_name = img.format_name
        self.holes = img.format_name == "qcow2" and _looks_metadata_preallocated(img)

    def extents(self, offset: int, length: int) -> list[Extent]:
        out = self.img.extents(offset, length)
        if not self.holes:
            return out
        fd = (self.img.data_file or self.img.file).fd
        split = []
        for ext in out:
            if ext.kind != DATA:
                split.append(ext)
                continue
            pos = ext.offset
            while pos < ext.end:
                host = ext.host + (pos - ext.offset)
                data = _seek(fd, host, os.SEEK_DATA)
                if data is None or data > host:
                    end = ext.end if data is None else min(ext.end, pos + data - host)
                    split.append(Extent(pos, end - pos, ZERO, 0))
                    pos = end
                    continue
                hole = _seek(fd, host, os.SEEK_HOLE)
                end = ext.end if hole is None else min(ext.end, pos + hole - host)
                split.append(Extent(pos, end - pos, DATA, host))
                pos = end
        return split


def _seek(fd: int, offset: int, whence: int) -> int | None:
    try:
        return os.lseek(fd, offset, whence)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None  # no more data past offset (SEEK_DATA), or offset past the end
        raise


def _as_qemu_reports(top: Image, stop: Image | None) -> tuple[_Layer, _Layer | None]:
    images = []
    layer = top
    while layer is not None:
        images.append(layer)
        layer = layer.backing
    wrapped = {}
    below = None
    for img in reversed(images):
        below = wrapped[id(img)] = _Layer(img, below)
    return wrapped[id(top)], (wrapped.get(id(stop)) if stop is not None else None)


def _any_holes(layer: _Layer | None, stop: _Layer | None) -> bool:
    while layer is not None and layer is not stop:
        if layer.holes:
            return True
        layer = layer.backing
    return False


def _looks_metadata_preallocated(img: Qcow2Image) -> bool:
    """qemu's heuristic: at least max(real * 10 / 9, real + 2) clusters in use, real = clusters the file allocates."""
    st = img.file.stat()
    cs = img.geo.cluster_size
    real = st.st_blocks * 512 // cs
    threshold = max(real * 10 // 9, real + 2)
    end_cluster = -(-st.st_size // cs)
    hdr = img.header
    codec = RefBlockCodec(1 << hdr.refcount_order, cs * 8 >> hdr.refcount_order)
    table = img.file.pread(hdr.refcount_table_clusters * cs, hdr.refcount_table_offset)
    in_use = 0
    for index in range(-(-end_cluster // codec.entries)):
        entry = int.from_bytes(table[index * 8:index * 8 + 8], "big") & C.REFT_OFFSET_MASK if index * 8 < len(table) else 0
        if not entry:
            continue
        block = codec.decode(img.file.pread(cs, entry))
        in_use += codec.used_count(block) if (index + 1) * codec.entries <= end_cluster else \
            sum(1 for i in range(end_cluster - index * codec.entries) if codec.get(block, i))
        if in_use >= threshold:
            return True
    return False


def measure_size(size: int, options: CreateOptions | None = None) -> dict:
    """Measure an empty image of a given virtual size (qemu-img measure --size)."""
    opts = options or CreateOptions()
    fully = prealloc_size(size, opts.cluster_size, opts.refcount_bits.bit_length() - 1, opts.extended_l2)
    aligned = -(-size // opts.cluster_size) * opts.cluster_size
    if opts.preallocation in ("falloc", "full"):
        return {"required": fully, "fully-allocated": fully}
    return {"required": fully - aligned, "fully-allocated": fully}
