# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qemu-img measure -O qcow2: the bytes a new image needs (qcow2_measure, qcow2_calc_prealloc_size)."""

from __future__ import annotations

from .bitmaps import read_directory
from .create import COMPAT_VERSIONS, CreateOptions
from .segments import RUN_DATA, layer_runs


def refcount_metadata_size(clusters, cluster_size, refcount_order):
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


def prealloc_size(virtual_size, cluster_size, refcount_order, extended_l2=False):
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


def _bitmaps_size(img, cluster_size):
    total = 0
    directory = 0
    for b in read_directory(img):
        bits = -(-img.size // b.granularity)
        clusters = -(-(-(-bits // 8)) // cluster_size)
        total += clusters * cluster_size
        total += -(-clusters * 8 // cluster_size) * cluster_size
        directory += (24 + len(b.name.encode("utf-8")) + 7) & ~7
    return total + -(-directory // cluster_size) * cluster_size


def measure_chain(top, stop=None, options=None):
    """Measure copying top's view (down to stop) into a new qcow2 image with options."""
    opts = options or CreateOptions()
    cs = opts.cluster_size
    order = opts.refcount_bits.bit_length() - 1
    size = top.size
    clusters = set()
    for start, end, kind in layer_runs(top, stop, 0, size):
        if kind == RUN_DATA:
            clusters.update(range(start // cs, -(-end // cs)))
    required_data = len(clusters) * cs
    fully = prealloc_size(size, cs, order, opts.extended_l2)
    aligned = -(-size // cs) * cs  # qemu counts whole clusters on both sides of the subtraction
    result = {"required": fully - aligned + required_data, "fully-allocated": fully}
    if COMPAT_VERSIONS[opts.compat] >= 3 and top.format_name == "qcow2" and top.header.version >= 3:
        result["bitmaps"] = _bitmaps_size(top, cs)
    return result


def measure_size(size, options=None):
    """Measure an empty image of a given virtual size (qemu-img measure --size)."""
    opts = options or CreateOptions()
    fully = prealloc_size(size, opts.cluster_size, opts.refcount_bits.bit_length() - 1, opts.extended_l2)
    aligned = -(-size // opts.cluster_size) * opts.cluster_size
    return {"required": fully - aligned, "fully-allocated": fully}
