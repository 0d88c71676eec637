# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""preallocation=metadata|falloc|full: every guest cluster gets a host cluster up front.

metadata leaves the data clusters as file holes (they read as zeros), falloc reserves their blocks,
full writes zeros into them. With a backing file (extended L2 only) the subclusters stay unallocated so
reads still go to the backing file, as qemu does.
"""

from __future__ import annotations

import typing

from . import constants as C

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .image import Qcow2Image


def preallocate(img: Qcow2Image, mode: str, has_backing: bool = False) -> None:
    geo = img.geo
    cb, cs = geo.cluster_bits, geo.cluster_size
    writer = img.writer
    total = geo.size_to_clusters(img.size)
    cluster = 0
    while cluster < total:
        table_end = min(total, ((cluster >> geo.l2_bits) + 1) << geo.l2_bits)
        writer.writable_l2(cluster >> geo.l2_bits)
        pos = cluster << cb
        for table, key, idx, s, e in writer._slices(pos, min(img.size, table_end << cb)):
            count = ((e - 1) >> cb) - (s >> cb) + 1
            first = img.refcounts.alloc(count)
            for i in range(count):
                host = ((first + i) << cb) | C.OFLAG_COPIED
                if geo.extended_l2:
                    table[(idx + i) * 2] = host
                    table[(idx + i) * 2 + 1] = 0 if has_backing else C.EXTL2_ALLOC_MASK
                else:
                    table[idx + i] = host
            img.l2cache.mark_dirty(key)
            if mode == "metadata":  # allocation may have reserved these blocks ahead; qemu leaves them holes
                img.file.punch_hole(first << cb, count * cs)
            elif mode == "falloc":
                img.file.fallocate(first << cb, count * cs)
            elif mode == "full":
                img.file.write_zeros(first << cb, count * cs)
        cluster = table_end
    img.flush()
