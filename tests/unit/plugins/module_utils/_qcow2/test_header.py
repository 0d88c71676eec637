"""Header: parse/build round trips (v2, v3, every extension) and qemu's validation, each error naming its field."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C, header
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import (
    FormatError, UnsafeBackingError, UnsupportedError)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.header import Header
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import Qcow2Image

CS = 65536
COMPARED = (
    'version', 'cluster_bits', 'size', 'crypt_method', 'l1_size', 'l1_table_offset', 'refcount_table_offset',
    'refcount_table_clusters', 'nb_snapshots', 'snapshots_offset', 'incompatible_features', 'compatible_features',
    'autoclear_features', 'refcount_order', 'compression_type', 'unknown_fields', 'backing_file', 'backing_format',
    'data_file', 'bitmaps_ext', 'unknown_extensions',
)


def make_header(version=3, cluster_bits=16, size=1 << 20, **fields):
    """A valid header: refcount table in cluster 1, L1 in cluster 3, big enough for size."""
    hdr = Header()
    hdr.version = version
    hdr.cluster_bits = cluster_bits
    hdr.size = size
    cs = 1 << cluster_bits
    hdr.refcount_table_offset = cs
    hdr.refcount_table_clusters = 1
    hdr.l1_table_offset = 3 * cs
    for name, value in fields.items():
        setattr(hdr, name, value)
    l2_bits = cluster_bits - (4 if hdr.extended_l2 else 3)
    hdr.l1_size = max(hdr.l1_size, -(-size // (1 << (cluster_bits + l2_bits))))
    if version == 2:
        hdr.refcount_order = 4
    return hdr


def cluster0(hdr):
    """What the file's first cluster holds after qemu writes this header."""
    raw = hdr.build()
    return raw + bytes(hdr.cluster_size - len(raw))


def reparse(hdr):
    return Header.parse(cluster0(hdr))


def assert_same(a, b):
    for name in COMPARED:
        assert getattr(a, name) == getattr(b, name), name


def patched(hdr, offset, fmt, value):
    raw = bytearray(cluster0(hdr))
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


def ext_record(etype, payload):
    return struct.pack('>II', etype, len(payload)) + payload + bytes(-len(payload) % 8)


def raw_with_extensions(*records, version=3, autoclear=0):
    """A header whose extension area holds exactly ``records`` then the end marker."""
    hdr = make_header(version=version, autoclear_features=autoclear)
    start = C.V2_HEADER_LENGTH if version == 2 else C.V3_HEADER_LENGTH
    raw = bytearray(hdr.build()[:start])
    raw += b''.join(records) + bytes(8)
    return bytes(raw) + bytes(CS - len(raw))


def format_error(buf):
    with pytest.raises(FormatError) as err:
        Header.parse(buf, '/images/x.qcow2')
    assert err.value.path == '/images/x.qcow2'
    return err.value


# ---- round trips ----

def test_v2_header_is_72_bytes_without_v3_fields_or_feature_table():
    hdr = make_header(version=2, backing_file='base.raw')
    raw = hdr.build()
    back = Header.parse(cluster0(hdr))

    assert hdr.backing_file_offset == 72 + 8  # right after the end-of-extensions marker
    assert raw[hdr.backing_file_offset:] == b'base.raw'
    assert C.EXT_FEATURE_TABLE.to_bytes(4, 'big') not in raw
    assert (back.version, back.header_length, back.refcount_order, back.incompatible_features) == (2, 72, 4, 0)
    assert back.backing_file == 'base.raw' and back.backing_format is None


def test_v2_extensions_start_right_after_the_72_byte_header():
    hdr = make_header(version=2, backing_file='base.qcow2', backing_format='qcow2')
    raw = hdr.build()

    assert struct.unpack_from('>I', raw, 72)[0] == C.EXT_BACKING_FORMAT
    assert reparse(hdr).backing_format == 'qcow2'


def test_v3_round_trip_with_every_extension_and_unknown_data_verbatim():
    hdr = make_header(
        backing_file='../base images/base.qcow2', backing_format='qcow2',
        incompatible_features=C.INCOMPAT_EXTL2 | C.INCOMPAT_COMPRESSION, compression_type=C.COMPRESSION_ZSTD,
        compatible_features=C.COMPAT_LAZY_REFCOUNTS, autoclear_features=C.AUTOCLEAR_BITMAPS, refcount_order=6,
        data_file='data.raw',
        bitmaps_ext={'nb_bitmaps': 2, 'bitmap_directory_size': 80, 'bitmap_directory_offset': 7 * CS},
        unknown_fields=b'\x01\x02\x03\x04\x05\x06\x07\x08',
        unknown_extensions=[(0x12345678, b'verbatim, odd length'), (0xDEADBEEF, b'')],
    )

    back = reparse(hdr)

    assert_same(hdr, back)
    assert back.header_length == 120
    assert back.feature_names == list(C.STANDARD_FEATURE_NAMES)
    # and a header rewritten from a parsed one is the same bytes (qemu keeps what it does not know)
    assert back.build() == hdr.build()


def test_extensions_start_at_header_length_not_at_offset_72():
    hdr = make_header(backing_format='raw', backing_file='b', unknown_fields=bytes(16))
    raw = hdr.build()

    assert hdr.header_length == 128
    assert struct.unpack_from('>I', raw, 128)[0] == C.EXT_BACKING_FORMAT
    assert reparse(hdr).backing_format == 'raw'


@pytest.mark.parametrize('cluster_bits, has_table', [(9, False), (12, False), (13, True), (16, True), (21, True)])
def test_feature_table_only_where_qemu_writes_one(cluster_bits, has_table):
    hdr = make_header(cluster_bits=cluster_bits)
    assert (C.EXT_FEATURE_TABLE.to_bytes(4, 'big') in hdr.build()) == has_table


names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters='\x7f'), min_size=1,
                max_size=60)


@given(version=st.sampled_from([2, 3]), cluster_bits=st.integers(12, 21), size=st.integers(0, 1 << 40),
       backing=st.one_of(st.none(), names), backing_format=st.sampled_from([None, 'raw', 'qcow2']),
       unknown=st.lists(st.tuples(st.integers(1, 0xFFFFFFFF).filter(lambda t: t not in (
           C.EXT_BACKING_FORMAT, C.EXT_FEATURE_TABLE, C.EXT_BITMAPS, C.EXT_CRYPTO_HEADER, C.EXT_DATA_FILE)),
           st.binary(max_size=40)), max_size=3, unique_by=lambda e: e[0]),
       lazy=st.booleans(), refcount_order=st.integers(0, 6))
def test_round_trip_of_generated_headers(version, cluster_bits, size, backing, backing_format, unknown, lazy,
                                         refcount_order):
    fields = dict(backing_file=backing, backing_format=backing_format if backing else None,
                  unknown_extensions=unknown)
    if version == 3:
        fields.update(compatible_features=C.COMPAT_LAZY_REFCOUNTS if lazy else 0, refcount_order=refcount_order)
    hdr = make_header(version=version, cluster_bits=cluster_bits, size=size // 512 * 512, **fields)

    assert_same(hdr, reparse(hdr))


def test_backing_name_must_fit_qemus_limits_when_building():
    with pytest.raises(FormatError) as err:
        make_header(backing_file='x' * 1024).build()
    assert err.value.field == 'backing_file_size'
    with pytest.raises(FormatError) as err:
        make_header(backing_file='b', backing_format='f' * 16).build()
    assert err.value.field == 'backing format'
    with pytest.raises(FormatError) as err:
        make_header(cluster_bits=9, backing_file='x' * 400, unknown_extensions=[(1, bytes(100))]).build()
    assert err.value.field == 'header'


# ---- validation: qemu's checks, each error names the field ----

def test_not_qcow2():
    assert format_error(b'QFI\xfa' + bytes(200)).field == 'magic'
    assert format_error(b'QFI\xfb' + bytes(20)).field == 'magic'  # shorter than a v2 header


@pytest.mark.parametrize('version', [0, 1, 4, 0xFFFFFFFF])
def test_unsupported_version(version):
    with pytest.raises(UnsupportedError, match='Unsupported qcow2 version %d' % version):
        Header.parse(patched(make_header(), 4, '>I', version))


@pytest.mark.parametrize('bits', [0, 8, 22, 63, 0xFFFFFFFF])
def test_cluster_bits_out_of_range(bits):
    err = format_error(patched(make_header(), 20, '>I', bits))
    assert err.field == 'cluster_bits' and 'cluster size' in str(err)


@pytest.mark.parametrize('length, message', [(103, 'too short'), (72, 'too short'), (CS + 8, 'exceeds cluster size')])
def test_v3_header_length(length, message):
    err = format_error(patched(make_header(), 100, '>I', length))
    assert err.field == 'header_length' and message in str(err)


def test_v3_header_longer_than_the_file(tmp_path):
    """qemu reads zeros past the end of the file: the unknown header fields are zeros, the image opens."""
    path = tmp_path / 'short.qcow2'
    path.write_bytes(patched(make_header(), 100, '>I', 4096)[:1024])
    with Qcow2Image(str(path), check_mode=True) as img:
        assert img.header.header_length == 4096 and img.header.unknown_fields.endswith(bytes(4096 - 1024))


def test_refcount_order_above_6():
    err = format_error(patched(make_header(), 96, '>I', 7))
    assert err.field == 'refcount_order' and 'may not exceed 64 bits' in str(err)


def test_unknown_incompatible_bit_is_named_from_the_feature_table():
    hdr = make_header(incompatible_features=1 << 5)
    raw = bytearray(cluster0(hdr))
    table_at = raw.find(C.EXT_FEATURE_TABLE.to_bytes(4, 'big'))
    entry = table_at + 8  # first entry: (incompatible, bit 0, "dirty bit")
    raw[entry:entry + 48] = struct.pack('>BB46s', 0, 5, b'frobnication')

    with pytest.raises(UnsupportedError, match=r'Unsupported qcow2 feature\(s\): frobnication$'):
        Header.parse(bytes(raw))
    struct.pack_into('>Q', raw, 72, (1 << 5) | (1 << 7))  # qemu 7.2 says exactly this:
    with pytest.raises(UnsupportedError, match=r'feature\(s\): frobnication, Unknown incompatible feature: 80$'):
        Header.parse(bytes(raw))
    with pytest.raises(UnsupportedError, match='Unknown incompatible feature: 40'):
        Header.parse(cluster0(make_header(cluster_bits=12, incompatible_features=1 << 6)))


@pytest.mark.parametrize('incompat, ctype', [(C.INCOMPAT_COMPRESSION, 0), (0, 1)])
def test_compression_type_and_its_feature_bit_must_agree(incompat, ctype):
    hdr = make_header(incompatible_features=incompat, compression_type=ctype)
    assert format_error(cluster0(hdr)).field == 'compression_type'


def test_unknown_compression_type():
    hdr = make_header(incompatible_features=C.INCOMPAT_COMPRESSION, compression_type=7)
    with pytest.raises(UnsupportedError, match='Unknown compression type 7'):
        Header.parse(cluster0(hdr))


def test_extended_l2_needs_16k_clusters():
    hdr = make_header(cluster_bits=13, incompatible_features=C.INCOMPAT_EXTL2)
    assert format_error(cluster0(hdr)).field == 'incompatible_features'


def test_encryption_is_refused():
    with pytest.raises(UnsupportedError, match='Encrypted'):
        Header.parse(patched(make_header(), 32, '>I', 2))


def test_backing_file_offset_beyond_the_first_cluster():
    raw = patched(make_header(backing_file='b'), 8, '>Q', CS + 512)
    err = format_error(raw)
    assert err.field == 'backing_file_offset' and 'Invalid backing file offset' in str(err)


@pytest.mark.parametrize('size', [1024, CS])
def test_backing_file_name_too_long(size):
    err = format_error(patched(make_header(backing_file='b'), 16, '>I', size))
    assert err.field == 'backing_file_size' and 'too long' in str(err)


def test_backing_name_cut_by_the_end_of_the_file(tmp_path):
    """The bytes past the end read as zeros (as in qemu), and the name ends at the first NUL: qemu then looks for
    the shorter name, and so does the engine."""
    hdr = make_header(cluster_bits=12, backing_file='base.qcow2')
    path = tmp_path / 'short.qcow2'
    path.write_bytes(hdr.build()[:-4])
    with Qcow2Image(str(path)) as img:
        assert img.backing_filename == 'base.q'


def test_backing_name_past_the_first_cluster():
    hdr = make_header(cluster_bits=9, backing_file='base.qcow2')
    raw = patched(hdr, 16, '>I', 512 - hdr.backing_file_offset + 8)
    assert format_error(raw).field == 'backing_file_size'


def test_backing_name_ends_at_a_nul_byte_as_in_qemu():
    hdr = make_header(backing_file='a\0b'.replace('\0', 'x'))
    raw = bytearray(cluster0(hdr))
    raw[hdr.backing_file_offset + 1] = 0
    assert Header.parse(bytes(raw)).backing_file == 'a'


def test_backing_name_that_is_not_utf8_is_refused_by_policy():
    hdr = make_header(backing_file='xx')
    raw = bytearray(cluster0(hdr))
    raw[hdr.backing_file_offset:hdr.backing_file_offset + 2] = b'\xff\xfe'
    with pytest.raises(UnsafeBackingError, match='not valid UTF-8'):
        Header.parse(bytes(raw))


@pytest.mark.parametrize('offset, fmt, value, field, message', [
    (36, '>I', 0x7FFFFFFF, 'Active L1 table', 'too large'),
    (40, '>Q', 3 * CS + 8, 'Active L1 table', 'offset invalid'),
    (40, '>Q', (1 << 64) - CS, 'Active L1 table', 'offset invalid'),
    (56, '>I', 0xFFFFFFFF, 'Reference count table', 'too large'),
    (48, '>Q', CS + 512, 'Reference count table', 'offset invalid'),
    (60, '>I', C.MAX_SNAPSHOTS + 1, 'nb_snapshots', 'Too many snapshots'),
    (64, '>Q', 12345, 'Snapshot table', 'offset invalid'),
    (36, '>I', 0, 'l1_size', 'L1 table is too small'),
    (24, '>Q', 1 << 63, 'size', 'too large'),
    (24, '>Q', (1 << 63) - CS, 'size', 'Image is too big'),
])
def test_table_bounds(offset, fmt, value, field, message):
    hdr = make_header(nb_snapshots=1, snapshots_offset=5 * CS)
    err = format_error(patched(hdr, offset, fmt, value))
    assert err.field == field and message in str(err)


def test_extension_overrunning_the_extension_area():
    raw = raw_with_extensions(struct.pack('>II', 0x12345678, CS))
    err = format_error(raw)
    assert err.field == 'header extension 0x12345678 at offset 112' and 'Header extension too large' in str(err)


@pytest.mark.parametrize('length', [1024, 4096, 0xFFFFFFFF])
def test_extension_overrunning_into_the_backing_name(length):
    """Never read as 'no backing file': qemu refuses the image, and so does the engine."""
    hdr = make_header(backing_file='base')
    raw = bytearray(cluster0(hdr))
    assert hdr.backing_file_offset < 1024
    struct.pack_into('>II', raw, C.V3_HEADER_LENGTH, C.EXT_BACKING_FORMAT, length)
    err = format_error(bytes(raw))
    assert err.field == 'header extension 0xe2792aca at offset 112'
    assert 'ends at offset %d (the backing file name)' % hdr.backing_file_offset in str(err)


def test_end_marker_with_a_length_past_the_area():
    """qemu checks the length before it looks at the type, even for the end marker."""
    raw = bytearray(raw_with_extensions())
    struct.pack_into('>II', raw, C.V3_HEADER_LENGTH, 0, CS)
    assert 'Header extension too large' in str(format_error(bytes(raw)))


def test_extension_record_cut_by_the_backing_name():
    """A record header that does not fit before the backing file name is too large too."""
    hdr = make_header(backing_file='base', backing_format='qcow2')
    raw = bytearray(cluster0(hdr))
    struct.pack_into('>Q', raw, 8, C.V3_HEADER_LENGTH + 4)  # the name now starts inside the first record
    assert format_error(bytes(raw)).field == 'header extension at offset 112'


def test_duplicate_extensions_are_accepted_the_last_one_wins():
    raw = raw_with_extensions(ext_record(C.EXT_BACKING_FORMAT, b'raw'), ext_record(C.EXT_BACKING_FORMAT, b'qcow2'),
                              ext_record(0x12345678, b'abc'), ext_record(0x12345678, b'abc'))
    hdr = Header.parse(raw)
    assert hdr.backing_format == 'qcow2'
    assert hdr.unknown_extensions == [(0x12345678, b'abc')] * 2


def test_backing_format_longer_than_qemus_buffer():
    raw = raw_with_extensions(ext_record(C.EXT_BACKING_FORMAT, b'q' * 16))
    assert format_error(raw).field == 'backing format'


@pytest.mark.parametrize('payload, field', [
    (bytes(16), 'bitmaps extension'),  # length must be 24
    (struct.pack('>IIQQ', 1, 1, 64, CS), 'bitmaps extension'),  # reserved must be 0
    (struct.pack('>IIQQ', 0, 0, 64, CS), 'nb_bitmaps'),
    (struct.pack('>IIQQ', 65536, 0, 64, CS), 'nb_bitmaps'),
    (struct.pack('>IIQQ', 1, 0, 1024 * 65535 + 1, CS), 'bitmap_directory_size'),
    (struct.pack('>IIQQ', 1, 0, 64, CS + 8), 'bitmap_directory_offset'),
])
def test_bitmaps_extension_validation(payload, field):
    record = ext_record(C.EXT_BITMAPS, payload)
    assert format_error(raw_with_extensions(record, autoclear=C.AUTOCLEAR_BITMAPS)).field == field
    if len(payload) == 24:  # without its autoclear bit qemu ignores the extension's content
        assert Header.parse(raw_with_extensions(record)).bitmaps_ext is not None


@pytest.mark.parametrize('length', [8, 16])
def test_crypto_extension_without_luks_is_refused(length):
    assert format_error(raw_with_extensions(ext_record(C.EXT_CRYPTO_HEADER, bytes(length)))).field == 'crypto extension'


def test_data_file_name_ends_at_a_nul_byte():
    assert Header.parse(raw_with_extensions(ext_record(C.EXT_DATA_FILE, b'a\0b'))).data_file == 'a'


def test_missing_end_marker_is_tolerated_like_qemu():
    hdr = make_header(cluster_bits=9)
    raw = hdr.build()
    # fill the whole extension area with one unknown extension, leaving no room for an end marker
    room = 512 - C.V3_HEADER_LENGTH - 8
    raw = raw[:C.V3_HEADER_LENGTH] + struct.pack('>II', 0x1234, room) + b'\xab' * room

    assert Header.parse(raw).unknown_extensions == [(0x1234, b'\xab' * room)]


def test_struct_formats_match_the_construct_declarations():
    """A header is read with struct (no construct import at start-up); the layouts must stay the declared ones."""
    decl = header.declarations()
    assert header._FIXED_V2.size == decl.HEADER_V2.sizeof() == C.V2_HEADER_LENGTH
    assert header._FIXED_V3_TAIL.size == decl.HEADER_V3_TAIL.sizeof() == C.V3_MIN_HEADER_LENGTH - C.V2_HEADER_LENGTH
    values = dict(zip(header._HEADER_FIELDS, range(1, len(header._HEADER_FIELDS) + 1)))
    assert header._FIXED_V2.unpack(decl.HEADER_V2.build(values)) == (C.QCOW_MAGIC,) + tuple(values.values())
    tail = dict(zip(header._V3_TAIL_FIELDS, (1 << 40, 2, 3, 4, 104)))
    assert header._FIXED_V3_TAIL.unpack(decl.HEADER_V3_TAIL.build(tail)) == tuple(tail.values())
