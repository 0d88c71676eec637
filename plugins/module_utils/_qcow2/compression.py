# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Compressed clusters as qemu writes them (block/qcow2-threads.c).

deflate: raw RFC 1951 stream, 4 KiB window (wbits -12), memLevel 9; the stored length is only known to
512-byte precision, so decompression stops once a full cluster came out. zstd: one or more frames,
decompressed in streaming mode until a full cluster came out.
"""

from __future__ import annotations

import zlib

from . import constants as C
from .deps import require_zstd, zstd_compress, zstd_decompressor
from .errors import CorruptionError


def decompress_cluster(data: bytes, cluster_size: int, compression_type: int, path: str | None = None) -> bytes:
    """Return exactly cluster_size bytes, or raise CorruptionError."""
    if compression_type == C.COMPRESSION_ZLIB:
        try:
            out = zlib.decompressobj(-12).decompress(data, cluster_size)
        except zlib.error as exc:
            raise CorruptionError("Could not decompress a zlib-compressed cluster: %s" % exc, path) from None
    else:
        require_zstd(path)
        out = _zstd_stream(data, cluster_size, path)
    if len(out) != cluster_size:
        raise CorruptionError("Compressed cluster decompressed to %d bytes instead of %d" % (len(out), cluster_size), path)
    return out


def _zstd_stream(data: bytes, cluster_size: int, path: str | None) -> bytes:
    parts = []
    total = 0
    view = memoryview(data)
    try:
        while total < cluster_size and len(view):
            dec = zstd_decompressor()
            obj = dec.decompressobj() if hasattr(dec, "decompressobj") else dec
            chunk = obj.decompress(view.tobytes())
            parts.append(chunk)
            total += len(chunk)
            rest = getattr(obj, "unused_data", b"")
            if not rest or total >= cluster_size:
                break
            view = memoryview(rest)
    except Exception as exc:  # zstd libraries raise their own error types
        raise CorruptionError("Could not decompress a zstd-compressed cluster: %s" % exc, path) from None
    return b"".join(parts)[:cluster_size]


def compress_cluster(data: bytes, compression_type: int) -> bytes | None:
    """Compressed bytes, or None if compression does not make the cluster smaller (write it plain)."""
    if compression_type == C.COMPRESSION_ZLIB:
        comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
        out = comp.compress(data) + comp.flush()
    else:
        out = zstd_compress(bytes(data))
    if len(out) >= len(data):
        return None
    return out
