# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The qcow2 header and its extensions: declared with construct, validated as qemu validates them.

Header.parse() reads cluster 0; Header.build() writes it back the way qemu's qcow2_update_header does:
fields, unknown header fields, extensions (backing format, data file, feature table, bitmaps,
unknown ones verbatim), end marker, backing file name.
"""

from __future__ import annotations

import functools
import struct
import types
import typing

from . import constants as C
from .deps import load_construct, require_construct
from .errors import FormatError, UnsafeBackingError, UnsupportedError


@functools.lru_cache(maxsize=None)
def declarations() -> types.SimpleNamespace:
    """The header's construct declarations, made (and construct imported) on first use: a plain header is read
    without them, its fixed fields unpacked with the struct formats below, which a unit test keeps equal to these."""
    load_construct()
    from construct import Bytes, Const, Int8ub, Int32ub, Int64ub, Struct

    header_v2 = Struct(
        "magic" / Const(C.QCOW_MAGIC),
        "version" / Int32ub,
        "backing_file_offset" / Int64ub,
        "backing_file_size" / Int32ub,
        "cluster_bits" / Int32ub,
        "size" / Int64ub,
        "crypt_method" / Int32ub,
        "l1_size" / Int32ub,
        "l1_table_offset" / Int64ub,
        "refcount_table_offset" / Int64ub,
        "refcount_table_clusters" / Int32ub,
        "nb_snapshots" / Int32ub,
        "snapshots_offset" / Int64ub,
    )
    header_v3_tail = Struct(
        "incompatible_features" / Int64ub,
        "compatible_features" / Int64ub,
        "autoclear_features" / Int64ub,
        "refcount_order" / Int32ub,
        "header_length" / Int32ub,
    )
    extension_header = Struct("type" / Int32ub, "length" / Int32ub)
    feature_name = Struct("type" / Int8ub, "bit" / Int8ub, "name" / Bytes(46))
    bitmaps_extension = Struct(
        "nb_bitmaps" / Int32ub,
        "reserved" / Int32ub,
        "bitmap_directory_size" / Int64ub,
        "bitmap_directory_offset" / Int64ub,
    )
    return types.SimpleNamespace(HEADER_V2=header_v2, HEADER_V3_TAIL=header_v3_tail, EXTENSION_HEADER=extension_header,
                                 FEATURE_NAME=feature_name, BITMAPS_EXTENSION=bitmaps_extension)


# Every image open reads the fixed fields: the same layouts as struct formats (magic, then _HEADER_FIELDS; then the
# version 3 fields)
_FIXED_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
_FIXED_V3_TAIL = struct.Struct(">QQQII")
_V3_TAIL_FIELDS = ("incompatible_features", "compatible_features", "autoclear_features", "refcount_order",
                   "header_length")

_HEADER_FIELDS = (
    "version", "backing_file_offset", "backing_file_size", "cluster_bits", "size", "crypt_method",
    "l1_size", "l1_table_offset", "refcount_table_offset", "refcount_table_clusters", "nb_snapshots",
    "snapshots_offset")

# Byte offsets of header fields that operations rewrite in place
OFFSET_SIZE = 24
OFFSET_L1 = 36  # l1_size (4) + l1_table_offset (8)
OFFSET_REFTABLE = 48  # refcount_table_offset (8) + refcount_table_clusters (4)
OFFSET_SNAPSHOTS = 60  # nb_snapshots (4) + snapshots_offset (8)
OFFSET_INCOMPAT = 72
OFFSET_COMPAT = 80
OFFSET_AUTOCLEAR = 88


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class NeedMoreData(Exception):
    """The first bytes read do not hold the whole extension area / backing name; read cluster 0 entirely."""


class Header:
    """Everything cluster 0 says about an image."""

    def __init__(self) -> None:
        self.version = 3
        self.backing_file_offset = 0
        self.backing_file_size = 0
        self.cluster_bits = 16
        self.size = 0
        self.crypt_method = 0
        self.l1_size = 0
        self.l1_table_offset = 0
        self.refcount_table_offset = 0
        self.refcount_table_clusters = 0
        self.nb_snapshots = 0
        self.snapshots_offset = 0
        self.incompatible_features = 0
        self.compatible_features = 0
        self.autoclear_features = 0
        self.refcount_order = 4
        self.header_length = C.V3_HEADER_LENGTH
        self.compression_type = C.COMPRESSION_ZLIB
        self.unknown_fields = b""  # bytes between 112 and header_length, kept verbatim
        self.backing_file = None
        self.backing_format = None
        self.data_file = None
        self._feature_table = b""  # raw feature name table payload, parsed only when a name is needed
        self.bitmaps_ext = None  # dict(nb_bitmaps, bitmap_directory_size, bitmap_directory_offset)
        self.unknown_extensions = []  # (type, payload) in file order

    # ---- geometry helpers ----
    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def refcount_bits(self) -> int:
        return 1 << self.refcount_order

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & C.INCOMPAT_EXTL2)

    @property
    def compat(self) -> str:
        return "0.10" if self.version == 2 else "1.1"

    def copy(self) -> Header:
        new = Header()
        new.__dict__.update(self.__dict__)
        new.unknown_extensions = list(self.unknown_extensions)
        new.bitmaps_ext = dict(self.bitmaps_ext) if self.bitmaps_ext else None
        return new

    # ---- parsing ----
    @classmethod
    def parse(cls, buf: bytes | bytearray, path: str | None = None) -> Header:
        """Parse cluster 0 (``buf`` holds at least the first 2 MiB or the whole file if shorter)."""
        require_construct()
        if len(buf) < C.V2_HEADER_LENGTH or buf[:4] != C.QCOW_MAGIC:
            raise FormatError("Image is not in qcow2 format", path, "magic")
        hdr = cls()
        for name, value in zip(_HEADER_FIELDS, _FIXED_V2.unpack_from(buf)[1:]):
            setattr(hdr, name, value)
        if hdr.version < 2 or hdr.version > 3:
            raise UnsupportedError("Unsupported qcow2 version %d" % hdr.version, path)
        if hdr.cluster_bits < C.MIN_CLUSTER_BITS or hdr.cluster_bits > C.MAX_CLUSTER_BITS:
            raise FormatError("Unsupported cluster size: 2^%d" % hdr.cluster_bits, path, "cluster_bits")
        cluster_size = hdr.cluster_size
        if hdr.version == 2:
            hdr.incompatible_features = hdr.compatible_features = hdr.autoclear_features = 0
            hdr.refcount_order = 4
            hdr.header_length = C.V2_HEADER_LENGTH
        else:
            if len(buf) < C.V3_MIN_HEADER_LENGTH:
                raise FormatError("qcow2 header too short", path, "header_length")
            for name, value in zip(_V3_TAIL_FIELDS, _FIXED_V3_TAIL.unpack_from(buf, C.V2_HEADER_LENGTH)):
                setattr(hdr, name, value)
            if hdr.header_length < C.V3_MIN_HEADER_LENGTH:
                raise FormatError("qcow2 header too short", path, "header_length")
            if hdr.header_length > cluster_size:
                raise FormatError("qcow2 header exceeds cluster size", path, "header_length")
            if hdr.header_length > C.V3_MIN_HEADER_LENGTH:
                hdr.compression_type = buf[C.V3_MIN_HEADER_LENGTH]
            hdr.unknown_fields = bytes(buf[C.V3_HEADER_LENGTH:hdr.header_length])
        if hdr.incompatible_features & ~C.INCOMPAT_MASK and hdr.backing_file_offset <= cluster_size:
            try:  # like qemu, read the feature name table first, to name the unsupported features
                hdr._parse_extensions(buf, path)
            except FormatError:
                pass
        hdr._validate_fields(path)
        hdr._parse_extensions(buf, path)
        unknown = hdr.incompatible_features & ~C.INCOMPAT_MASK
        if unknown:
            raise UnsupportedError("Unsupported qcow2 feature(s): %s" % hdr._feature_list(unknown, 0), path)
        hdr._parse_backing_name(buf, path)
        return hdr

    def _validate_fields(self, path: str | None) -> None:
        cs = self.cluster_size
        if self.refcount_order > 6:
            raise FormatError("Reference count entry width too large; may not exceed 64 bits", path, "refcount_order")
        if self.compression_type not in C.COMPRESSION_NAMES:
            raise UnsupportedError("Unknown compression type %d" % self.compression_type, path)
        has_bit = bool(self.incompatible_features & C.INCOMPAT_COMPRESSION)
        if has_bit != (self.compression_type != C.COMPRESSION_ZLIB):
            raise FormatError("Compression type and the compression incompatible feature bit disagree", path, "compression_type")
        if self.extended_l2 and self.cluster_bits < C.MIN_EXTL2_CLUSTER_BITS:
            raise FormatError("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
                              path, "incompatible_features")
        if self.crypt_method:
            raise UnsupportedError("Encrypted qcow2 images (crypt_method %d) are not supported" % self.crypt_method, path)
        if self.backing_file_offset > cs:
            raise FormatError("Invalid backing file offset", path, "backing_file_offset")
        if self.backing_file_offset and self.backing_file_size > min(C.MAX_BACKING_NAME, cs - self.backing_file_offset):
            raise FormatError("Backing file name too long", path, "backing_file_size")
        _validate_table(path, "Active L1 table", self.l1_table_offset, self.l1_size, 8, C.MAX_L1_BYTES, cs)
        _validate_table(path, "Reference count table", self.refcount_table_offset,
                        self.refcount_table_clusters, cs, C.MAX_REFTABLE_BYTES, cs)
        if self.nb_snapshots > C.MAX_SNAPSHOTS:
            raise FormatError("Too many snapshots", path, "nb_snapshots")
        _validate_table(path, "Snapshot table", self.snapshots_offset, self.nb_snapshots,
                        C.SNAPSHOT_HEADER_SIZE, C.SNAPSHOT_HEADER_SIZE * C.MAX_SNAPSHOTS, cs)
        if self.size > (1 << 63) - 1:
            raise FormatError("Image size is too large", path, "size")
        l2_bits = self.cluster_bits - (4 if self.extended_l2 else 3)
        l1_needed = -(-self.size // (1 << (self.cluster_bits + l2_bits)))
        if l1_needed > C.MAX_L1_BYTES // 8:
            raise FormatError("Image is too big", path, "size")
        if self.l1_size < l1_needed:
            raise FormatError("L1 table is too small", path, "l1_size")

    @property
    def feature_names(self) -> list[tuple[int, int, str]]:
        """(type, bit, name) entries of the image's feature name table."""
        entries = []
        payload = self._feature_table
        for i in range(len(payload) // 48):
            entry = declarations().FEATURE_NAME.parse(payload[i * 48:(i + 1) * 48])
            entries.append((entry.type, entry.bit, entry.name.split(b"\0", 1)[0].decode("utf-8", "replace")))
        return entries

    def _feature_list(self, bits: int, ftype: int) -> str:
        names = {(t, b): n for t, b, n in self.feature_names}
        out = []
        for bit in range(64):
            if bits & (1 << bit):
                out.append(names.get((ftype, bit), "Unknown incompatible feature: %x" % (1 << bit)))
        return ", ".join(out)

    def _parse_extensions(self, buf: bytes | bytearray, path: str | None) -> None:
        """qcow2_read_extensions(): records from header_length up to the backing name (or the end of cluster 0).

        A record whose header or payload would cross that limit makes qemu refuse the image ("Header extension
        too large"), end marker included; so does the engine, instead of reading the image as if the area ended
        there (which would, for one, lose its backing file). Duplicates are accepted as qemu accepts them: the
        last record of a type wins.
        """
        offset = C.V2_HEADER_LENGTH if self.version == 2 else self.header_length
        end = self.backing_file_offset or self.cluster_size
        limit = "the backing file name" if self.backing_file_offset else "the end of the first cluster"
        while offset < end:
            if offset + 8 > end:
                raise FormatError("Header extension too large: the extension record at offset %d crosses the end of "
                                  "the extension area at offset %d (%s)" % (offset, end, limit),
                                  path, "header extension at offset %d" % offset)
            if offset + 8 > len(buf):
                raise NeedMoreData()  # buf holds the whole of cluster 0 when it is shorter than the area
            etype, length = struct.unpack_from(">II", buf, offset)
            offset += 8
            if length > end - offset:
                raise FormatError("Header extension too large: extension 0x%08x at offset %d claims %d bytes, but the "
                                  "extension area ends at offset %d (%s)" % (etype, offset - 8, length, end, limit),
                                  path, "header extension 0x%08x at offset %d" % (etype, offset - 8))
            if etype == C.EXT_END:
                return
            if offset + length > len(buf):
                raise NeedMoreData()
            self._parse_extension(etype, bytes(buf[offset:offset + length]), path)
            offset += _pad8(length)
        # qemu tolerates a missing end marker when the area simply runs out

    def _parse_extension(self, etype: int, payload: bytes, path: str | None) -> None:
        if etype == C.EXT_BACKING_FORMAT:
            if len(payload) > C.MAX_BACKING_FORMAT:
                raise FormatError("ERROR: ext_backing_format: len=%d too large" % len(payload), path, "backing format")
            self.backing_format = _decode_name(payload, path, "backing format")
        elif etype == C.EXT_FEATURE_TABLE:
            self._feature_table = payload
        elif etype == C.EXT_BITMAPS:
            if len(payload) != 24:
                raise FormatError("bitmaps_ext: Invalid extension length", path, "bitmaps extension")
            ext = declarations().BITMAPS_EXTENSION.parse(payload)
            self.bitmaps_ext = {
                "nb_bitmaps": ext.nb_bitmaps,
                "bitmap_directory_size": ext.bitmap_directory_size,
                "bitmap_directory_offset": ext.bitmap_directory_offset,
            }
            if self.autoclear_features & C.AUTOCLEAR_BITMAPS:  # without the bit qemu ignores the extension's content
                _validate_bitmaps_extension(ext, self.cluster_size, path)
        elif etype == C.EXT_CRYPTO_HEADER:
            # crypt_method is 0 here (encrypted images are refused before): qemu refuses the extension then
            raise FormatError("CRYPTO header extension only expected with LUKS encryption method", path,
                              "crypto extension")
        elif etype == C.EXT_DATA_FILE:
            self.data_file = _decode_name(payload, path, "data file name")
        else:
            self.unknown_extensions.append((etype, payload))

    def _parse_backing_name(self, buf: bytes | bytearray, path: str | None) -> None:
        if not self.backing_file_offset:
            self.backing_file = None
            return
        start, length = self.backing_file_offset, self.backing_file_size
        if start + length > len(buf) and start + length <= self.cluster_size:
            raise NeedMoreData()
        if start + length > len(buf):
            raise FormatError("Backing file name extends past the end of the file", path, "backing_file_size")
        self.backing_file = _decode_name(buf[start:start + length], path, "backing file name")

    # ---- building ----
    def extension_area(self) -> bytes:
        """The extension records, qemu's order, without end marker."""
        decl = declarations()
        out = []

        def add(etype: int, payload: bytes) -> None:
            out.append(decl.EXTENSION_HEADER.build({"type": etype, "length": len(payload)}))
            out.append(payload + bytes(_pad8(len(payload)) - len(payload)))

        if self.backing_format:
            add(C.EXT_BACKING_FORMAT, self.backing_format.encode("utf-8"))
        if self.data_file:
            add(C.EXT_DATA_FILE, self.data_file.encode("utf-8"))
        if self.version >= 3 and self.cluster_size > 4096:
            table = b"".join(decl.FEATURE_NAME.build({"type": t, "bit": b, "name": n.encode().ljust(46, b"\0")})
                             for t, b, n in C.STANDARD_FEATURE_NAMES)
            add(C.EXT_FEATURE_TABLE, table)
        if self.bitmaps_ext:
            add(C.EXT_BITMAPS, decl.BITMAPS_EXTENSION.build(dict(self.bitmaps_ext, reserved=0)))
        for etype, payload in self.unknown_extensions:
            add(etype, payload)
        return b"".join(out)

    def build(self) -> bytes:
        """Serialize cluster 0 (header, extensions, backing name); returns the bytes to write at offset 0."""
        cs = self.cluster_size
        if self.version == 2:
            fixed_len = C.V2_HEADER_LENGTH
        else:
            self.header_length = C.V3_HEADER_LENGTH + len(self.unknown_fields)
            fixed_len = self.header_length
        ext = self.extension_area() + bytes(8)  # end marker
        backing = self.backing_file.encode("utf-8") if self.backing_file else b""
        if len(backing) > C.MAX_BACKING_NAME:
            raise FormatError("Backing file name too long", None, "backing_file_size")
        if self.backing_format and len(self.backing_format.encode("utf-8")) > C.MAX_BACKING_FORMAT:
            raise FormatError("Backing file format name too long", None, "backing format")
        total = fixed_len + len(ext) + len(backing)
        if total > cs:
            raise FormatError("Header extensions and backing file name do not fit in the first cluster (%d > %d bytes)"
                              % (total, cs), None, "header")
        if backing:
            self.backing_file_offset = fixed_len + len(ext)
            self.backing_file_size = len(backing)
        else:
            self.backing_file_offset = 0
            self.backing_file_size = 0
        fields = {name: getattr(self, name) for name in _HEADER_FIELDS}
        decl = declarations()
        out = [decl.HEADER_V2.build(fields)]
        if self.version >= 3:
            out.append(decl.HEADER_V3_TAIL.build({
                "incompatible_features": self.incompatible_features,
                "compatible_features": self.compatible_features,
                "autoclear_features": self.autoclear_features,
                "refcount_order": self.refcount_order,
                "header_length": self.header_length,
            }))
            out.append(struct.pack(">B7x", self.compression_type))
            out.append(self.unknown_fields)
        out.append(ext)
        out.append(backing)
        return b"".join(out)

    def pack_fields(self, start: int, end: int) -> bytes:
        """The serialized bytes [start, end) of the fixed header, for an in-place rewrite of a few fields."""
        return self.build()[start:end]


def _decode_name(raw: bytes | bytearray, path: str | None, what: str) -> str:
    """A name as qemu reads it, a C string: it ends at the first NUL byte. Names that are not UTF-8 are refused:
    qemu would open such a path, but a name no tool can print is a hostile one (docs/hardening.md)."""
    raw = bytes(raw).split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeBackingError("%s %r of %s is not valid UTF-8; refused" % (what.capitalize(), raw, path),
                                 path) from None


def _validate_bitmaps_extension(ext: typing.Any, cluster_size: int, path: str | None) -> None:
    if ext.reserved:
        raise FormatError("bitmaps_ext: Reserved field is not zero", path, "bitmaps extension")
    if ext.nb_bitmaps == 0 or ext.nb_bitmaps > C.MAX_BITMAPS:
        raise FormatError("bitmaps_ext: Invalid number of bitmaps", path, "nb_bitmaps")
    if ext.bitmap_directory_size > C.MAX_BITMAP_DIRECTORY_SIZE:
        raise FormatError("bitmaps_ext: bitmap directory size too large", path, "bitmap_directory_size")
    if ext.bitmap_directory_offset % cluster_size:
        raise FormatError("bitmaps_ext: invalid bitmap directory offset", path, "bitmap_directory_offset")


def _validate_table(path: str | None, name: str, offset: int, entries: int, entry_len: int, max_bytes: int, cluster_size: int) -> None:
    """qcow2_validate_table(): bound a table's size and check its offset."""
    if entries > max_bytes // entry_len:
        raise FormatError("%s too large" % name, path, name)
    if offset % cluster_size or (1 << 63) - 1 - entries * entry_len < offset:
        raise FormatError("%s offset invalid" % name, path, name)
