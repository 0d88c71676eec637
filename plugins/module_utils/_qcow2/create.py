# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Creating qcow2 images as qemu-img create does.

Layout, like qemu: cluster 0 header, cluster 1 refcount table, cluster 2 refcount block, then the L1
table; the image is then grown to its size through the ordinary allocation path and preallocated.
"""

from __future__ import annotations

import os
import struct

from . import constants as C
from .chain import ChainPolicy, check_backing_reference, open_chain
from .errors import InvalidArgumentError, Qcow2Error
from .fileio import BlockFile
from .header import Header
from .image import Qcow2Image
from . import locking
from .resize import grow


COMPAT_VERSIONS = {"0.10": 2, "v2": 2, "1.1": 3, "v3": 3}
PREALLOCATION_MODES = ("off", "metadata", "falloc", "full")


class CreateOptions:
    """What qemu-img create -f qcow2 -o ... accepts that matters for qcow2."""

    def __init__(self, size: int | None = None, cluster_size: int = C.DEFAULT_CLUSTER_SIZE, compat: str = "1.1",
                 refcount_bits: int = 16, lazy_refcounts: bool = False, extended_l2: bool = False,
                 preallocation: str = "off", backing_file: str | None = None, backing_format: str | None = None,
                 compression_type: str = "zlib") -> None:
        self.size = size
        self.cluster_size = cluster_size
        self.compat = compat
        self.refcount_bits = refcount_bits
        self.lazy_refcounts = lazy_refcounts
        self.extended_l2 = extended_l2
        self.preallocation = preallocation
        self.backing_file = backing_file
        self.backing_format = backing_format
        self.compression_type = compression_type

    def validate(self) -> None:
        cs = self.cluster_size
        if not isinstance(cs, int) or cs < 512 or cs > (2 << 20) or cs & (cs - 1):
            raise InvalidArgumentError("Cluster size must be a power of two between 512 and 2097152 bytes (got %r)" % (cs,))
        if self.compat not in COMPAT_VERSIONS:
            raise InvalidArgumentError("Invalid compatibility level %r; use '0.10' or '1.1'" % (self.compat,))
        v3 = COMPAT_VERSIONS[self.compat] == 3
        rb = self.refcount_bits
        if rb not in (1, 2, 4, 8, 16, 32, 64):
            raise InvalidArgumentError("Refcount width must be a power of two and may not exceed 64 bits (got %r)" % (rb,))
        if not v3 and rb != 16:
            raise InvalidArgumentError("Different refcount widths than 16 bits require compatibility level 1.1 or above")
        if self.lazy_refcounts and not v3:
            raise InvalidArgumentError("Lazy refcounts only supported with compatibility level 1.1 and above")
        if self.extended_l2:
            if not v3:
                raise InvalidArgumentError("Extended L2 entries are only supported with compatibility level 1.1 and above")
            if cs < 16384:
                raise InvalidArgumentError("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        if self.compression_type not in ("zlib", "zstd"):
            raise InvalidArgumentError("Unknown compression type %r; use zlib or zstd" % (self.compression_type,))
        if self.compression_type == "zstd" and not v3:
            raise InvalidArgumentError("Non-zlib compression type is only supported with compatibility level 1.1 and above")
        if self.preallocation not in PREALLOCATION_MODES:
            raise InvalidArgumentError("Invalid preallocation mode %r; use one of %s" % (self.preallocation, ", ".join(PREALLOCATION_MODES)))
        if self.backing_file and self.preallocation != "off" and not self.extended_l2:
            raise InvalidArgumentError("Backing file and preallocation can only be used at the same time if extended_l2 is on")
        if self.backing_file is not None and not self.backing_format:
            raise InvalidArgumentError("Backing file specified without backing format")
        if self.backing_format and self.backing_format not in ("qcow2", "raw"):
            raise InvalidArgumentError("Backing format must be qcow2 or raw (got %r)" % (self.backing_format,))
        if self.size is not None and (not isinstance(self.size, int) or self.size < 0):
            raise InvalidArgumentError("Image size must be a non-negative number of bytes (got %r)" % (self.size,))


def _initial_header(opts: CreateOptions) -> Header:
    hdr = Header()
    hdr.version = COMPAT_VERSIONS[opts.compat]
    hdr.cluster_bits = opts.cluster_size.bit_length() - 1
    hdr.size = 0
    hdr.refcount_order = opts.refcount_bits.bit_length() - 1
    hdr.refcount_table_offset = opts.cluster_size
    hdr.refcount_table_clusters = 1
    if hdr.version >= 3:
        if opts.lazy_refcounts:
            hdr.compatible_features |= C.COMPAT_LAZY_REFCOUNTS
        if opts.extended_l2:
            hdr.incompatible_features |= C.INCOMPAT_EXTL2
        if opts.compression_type == "zstd":
            hdr.incompatible_features |= C.INCOMPAT_COMPRESSION
            hdr.compression_type = C.COMPRESSION_ZSTD
    if opts.backing_file:
        hdr.backing_file = opts.backing_file
        hdr.backing_format = opts.backing_format
    return hdr


def _backing_size(path: str, opts: CreateOptions, policy: ChainPolicy) -> int:
    backing_path = check_backing_reference(opts.backing_file, path, policy)
    try:
        with open_chain(backing_path, fmt=opts.backing_format, policy=policy) as chain:
            return chain.top.size
    except Qcow2Error as exc:
        raise type(exc)("Could not open backing image '%s': %s" % (backing_path, exc), path) from None


def create(path: str, opts: CreateOptions, policy: ChainPolicy | None = None, overwrite: bool = False) -> int:
    """Create a qcow2 image at path. Refuses to replace an existing file unless overwrite."""
    policy = policy or ChainPolicy()
    opts.validate()
    size = opts.size
    if opts.backing_file:
        backing_size = _backing_size(path, opts, policy)
        if size is None:
            size = backing_size
    if size is None:
        raise InvalidArgumentError("Image size must be given when there is no backing file")
    if size % 512:
        raise InvalidArgumentError("Image size must be a multiple of 512 bytes (got %d)" % size)
    if os.path.exists(path) and not overwrite:
        raise InvalidArgumentError("Could not create '%s': File exists" % path, path)
    hdr = _initial_header(opts)
    cs = opts.cluster_size
    f = BlockFile(path, create=True, exclusive=not overwrite)
    try:
        locking.acquire(f.fd, path, True)  # before truncating: never clobber an image qemu has open
        f.truncate(0)
        first_block = bytearray(cs)
        # clusters 0..2 (header, refcount table, refcount block) have refcount 1
        for cluster in range(3):
            _set_packed_refcount(first_block, cluster, 1, opts.refcount_bits)
        table = struct.pack(">Q", 2 * cs) + bytes(cs - 8)
        f.pwrite(hdr.build().ljust(cs, b"\0") + table + bytes(first_block), 0)
        f.flush()
    finally:
        locking.release(f.fd)
        f.close()
    img = Qcow2Image(path, writable=True)
    try:
        grow(img, size)
        if opts.preallocation != "off":
            from .preallocate import preallocate
            preallocate(img, opts.preallocation, has_backing=bool(opts.backing_file))
        img.flush()
    finally:
        img.close()
    return size


def _set_packed_refcount(block: bytearray, index: int, value: int, bits: int) -> None:
    """Set one refcount in an on-disk (big-endian, bit-packed below 8 bits) refblock."""
    if bits >= 8:
        width = bits // 8
        block[index * width:(index + 1) * width] = value.to_bytes(width, "big")
    else:
        per_byte = 8 // bits
        shift = (index % per_byte) * bits
        block[index // per_byte] |= value << shift
