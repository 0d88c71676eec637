# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Which host bytes of a base are copies of which host bytes of the layer just committed into it.

Once a commit of top (the one layer above base) has copied top's data, base reads as top wherever top decides:
where top holds uncompressed data and base maps the same guest range to data, base's bytes are a copy of top's.
A caller keeping digests of top's file blocks (the backup store) takes base's from them instead of hashing.
"""

from __future__ import annotations

import typing

from . import constants as C
from .image import DATA, Qcow2Image

if typing.TYPE_CHECKING:  # names used in annotations only
    from .chain import Image

Piece = typing.Tuple[int, int, int]  # (base host offset, top host offset, length)
_NOT_PLAIN_DATA = C.OFLAG_COMPRESSED | C.OFLAG_ZERO


def copied_pieces(top: Image, base: Image) -> list[Piece]:
    """Where base's file holds a copy of top's (after a commit of top into base, top right above base)."""
    if not (isinstance(top, Qcow2Image) and isinstance(base, Qcow2Image)) or top.has_data_file or base.has_data_file:
        return []  # host offsets in a raw image or a data file are not the image file's
    if top.geo.cluster_size == base.geo.cluster_size and not (top.geo.extended_l2 or base.geo.extended_l2):
        return _same_entries(top, base)
    return _by_extents(top, base)


def _same_entries(top: Qcow2Image, base: Qcow2Image) -> list[Piece]:
    """Same geometry: a guest cluster has its entry at the same place of both L2 tables; compare them side by side."""
    geo, mask = top.geo, C.L2E_OFFSET_MASK
    clusters = -(-top.size // geo.cluster_size)  # entries past top's end were not committed
    out = []
    for l1_index in range(min(len(top.l1), len(base.l1))):
        top_table, base_table = top.l2_table_offset(l1_index), base.l2_table_offset(l1_index)
        if not (top_table and base_table):
            continue
        for slice_index in range(geo.slices_per_table):
            first = l1_index * geo.l2_entries + slice_index * geo.slice_entries
            if first >= clusters:
                break
            top_slice = top.l2_slice(top_table, slice_index)
            # most entries are empty: the cheap test first
            used = [index for index, entry in enumerate(top_slice) if entry and first + index < clusters]
            if not used:
                continue
            base_slice = base.l2_slice(base_table, slice_index)
            for index in used:
                source, entry = top_slice[index], base_slice[index]
                if source & mask and entry & mask and not (source | entry) & _NOT_PLAIN_DATA:
                    out.append((entry & mask, source & mask, geo.cluster_size))
    return out


def _by_extents(top: Qcow2Image, base: Qcow2Image) -> list[Piece]:
    """Any geometry (subclusters, other cluster sizes): pair the data extents of both by guest offset."""
    source = [ext for ext in top.extents(0, top.size) if ext.kind == DATA]
    dest = [ext for ext in base.extents(0, top.size) if ext.kind == DATA]
    out = []
    i = j = 0
    while i < len(source) and j < len(dest):
        lo, hi = max(source[i].offset, dest[j].offset), min(source[i].end, dest[j].end)
        if lo < hi:
            out.append((dest[j].host + lo - dest[j].offset, source[i].host + lo - source[i].offset, hi - lo))
        if source[i].end <= dest[j].end:
            i += 1
        else:
            j += 1
    return out
