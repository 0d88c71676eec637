# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Writing a complete new refcount structure (table + blocks) for given counts, into fresh clusters.

The structure must count itself, so its size is found by fixed-point iteration, as qemu's
rebuild_refcount_structure and qcow2-to-stdout.py do. Nothing points at it until the caller switches
the header, so writing it can never damage the image.
"""

from __future__ import annotations

import typing

from array import array

from ..errors import CorruptionError
from ..layout import array_to_be
from .block import RefBlockCodec
from .table import check_reftable_size

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from ..image import Qcow2Image
    from ..layout import Geometry
    from .references import RefMap


def plan_refcount_structure(geo: Geometry, refs: RefMap, start: int, path: str | None = None) -> tuple[list[int], int]:
    """(block ranges, table clusters) for a structure placed at cluster ``start`` and counting ``refs``."""
    rbb, cs = geo.refblock_bits, geo.cluster_size
    used = set(refs.used_groups(rbb))
    nb, tc = 0, 1
    while True:
        area_end = start + nb + tc
        ranges = used | set(range(start >> rbb, ((area_end - 1) >> rbb) + 1))
        entries = max(ranges) + 1
        new_tc = -(-entries * 8 // cs)
        check_reftable_size(new_tc * cs, path)
        if len(ranges) == nb and new_tc == tc:
            return sorted(ranges), tc
        nb, tc = len(ranges), new_tc


def write_refcount_structure(img: Qcow2Image, refs: RefMap, start: int) -> tuple[int, int, int]:
    """Write blocks then table at clusters start.. ; returns (table_offset, table_clusters, end cluster)."""
    geo = img.geo
    cb, rbb, rbe = geo.cluster_bits, geo.refblock_bits, geo.refblock_entries
    ranges, table_clusters = plan_refcount_structure(geo, refs, start, img.path)
    nb = len(ranges)
    for cluster in range(start, start + nb + table_clusters):
        refs.inc(cluster)
    codec = RefBlockCodec(geo.refcount_bits, rbe)
    table = array("Q", [0]) * (table_clusters * geo.cluster_size // 8)
    for i, r in enumerate(ranges):
        counts = refs.slice(r << rbb, (r + 1) << rbb)
        block = codec.empty()
        if codec.packed:
            for j, v in enumerate(counts):
                if v:
                    if v > geo.refcount_max:
                        raise CorruptionError("Refcount %d of cluster %d exceeds the %d-bit maximum" % (v, (r << rbb) + j, geo.refcount_bits), img.path)
                    codec.set(block, j, v)
        else:
            if max(counts) > geo.refcount_max:
                raise CorruptionError("A refcount exceeds the %d-bit maximum of this image (internal snapshots need "
                                      "wider refcounts)" % geo.refcount_bits, img.path)
            block = array(codec.typecode, counts)
        img.file.pwrite(codec.encode(block), (start + i) << cb)
        table[r] = (start + i) << cb
    table_offset = (start + nb) << cb
    img.file.pwrite(array_to_be(table), table_offset)
    return table_offset, table_clusters, start + nb + table_clusters
