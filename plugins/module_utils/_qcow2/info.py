# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qemu-img info --output=json for qcow2 and raw images, the same keys and values."""

from __future__ import annotations

import typing

from . import constants as C
from .chain import resolve_backing_path
from .layout import COMPRESSED, NORMAL, ZERO_ALLOC, classify, nonzero_entries

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .chain import Chain, Image


def _actual_size(img: Image) -> int:
    return img.file.stat().st_blocks * 512


def image_info(img: Image) -> dict:
    """One image's info dict, keys exactly as qemu-img prints them."""
    info = {
        "virtual-size": img.size,
        "filename": img.path,
        "format": img.format_name,
        "actual-size": _actual_size(img),
        "dirty-flag": False,
    }
    if img.format_name != "qcow2":
        return info
    hdr = img.header
    info["cluster-size"] = img.geo.cluster_size
    info["dirty-flag"] = bool(hdr.incompatible_features & C.INCOMPAT_DIRTY)
    data = {
        "compat": hdr.compat,
        "compression-type": C.COMPRESSION_NAMES[hdr.compression_type],
        "refcount-bits": hdr.refcount_bits,
    }
    if hdr.version >= 3:
        data["lazy-refcounts"] = bool(hdr.compatible_features & C.COMPAT_LAZY_REFCOUNTS)
        data["corrupt"] = bool(hdr.incompatible_features & C.INCOMPAT_CORRUPT)
        data["extended-l2"] = hdr.extended_l2
        if hdr.bitmaps_ext and hdr.autoclear_features & C.AUTOCLEAR_BITMAPS:
            data["bitmaps"] = [{"flags": b.flag_names(), "name": b.name, "granularity": b.granularity}
                               for b in img.bitmap_trust.loaded()]
        if hdr.data_file:
            data["data-file"] = hdr.data_file
            data["data-file-raw"] = bool(hdr.autoclear_features & C.AUTOCLEAR_DATA_FILE_RAW)
    info["format-specific"] = {"type": "qcow2", "data": data}
    if hdr.backing_file:
        info["backing-filename"] = hdr.backing_file
        info["full-backing-filename"] = resolve_backing_path(img.path, hdr.backing_file)
        if hdr.backing_format:
            info["backing-filename-format"] = hdr.backing_format
    snaps = img.snapshot_list()
    if snaps:
        from .snapshots import snapshot_info  # imported by the few images that need it: start-up time counts
        info["snapshots"] = [snapshot_info(sn) for sn in snaps]
    return info


def chain_info(chain: Chain, bitmaps: bool = False) -> list[dict]:
    """qemu-img info --backing-chain: one dict per image, top first; with bitmaps, each qcow2 image's dict also
    has "bitmaps": every bitmap with whether it can be trusted and why not (bitmap_ops.describe)."""
    infos = [image_info(img) for img in chain.images]
    if bitmaps:
        for info, img in zip(infos, chain.images):
            if img.format_name == "qcow2":
                info["bitmaps"] = _described_bitmaps(img)
    return infos


def _described_bitmaps(img: Image) -> list[dict]:
    if not img.bitmap_trust.verdicts:
        return []  # what describe() says, without importing the bitmap operations: start-up time counts
    from .bitmap_ops import describe
    return describe(img)


def allocated_bytes(img: Image) -> int:
    """Guest bytes the image itself holds (data, compressed or preallocated zero clusters) in its active L1."""
    if img.format_name != "qcow2":
        return img.size
    geo = img.geo
    total = 0
    for l1_index, _entry in nonzero_entries(img.l1):
        table = img.l2_table_offset(l1_index)
        if not table:
            continue
        for s in range(geo.slices_per_table):
            entries = img.l2_slice(table, s)
            for i in range(0, len(entries), geo.l2_entry_words):
                entry = entries[i]
                if not entry:
                    continue
                kind = classify(entry, geo.extended_l2)
                if kind in (NORMAL, COMPRESSED, ZERO_ALLOC):
                    total += geo.cluster_size
    return total
