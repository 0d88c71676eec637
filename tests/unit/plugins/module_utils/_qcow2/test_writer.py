"""Guest writes: the engine's result is a model bytearray, the image stays consistent (engine check)."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check, create_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import CorruptionError
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke

CS = 65536
MiB = 1 << 20


def _image(tmp_path, size=4 * MiB, **opts):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=size, **opts))
    with open_chain(path, writable=True) as chain:
        chain.top.write(0, b'\x11' * (2 * CS))
    return path


def _file_bytes(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


# ---- never let guest data or an L2 update land on other metadata (qemu's overlap check) ----

@pytest.mark.parametrize('victim', ['refcount table', 'L1 table', 'active L2 table', 'refcount block'])
def test_data_cluster_mapped_onto_metadata_is_not_written(tmp_path, victim):
    path = _image(tmp_path)
    hdr = poke.header(path)
    target = {
        'refcount table': hdr['refcount_table_offset'],
        'L1 table': hdr['l1_table_offset'],
        'active L2 table': poke.l1_entry(path, 0) & poke.OFFSET_MASK,
        'refcount block': poke.reftable_entry(path, 0) & poke.REFT_OFFSET_MASK,
    }[victim]
    poke.set_l2_entry(path, CS, poke.OFLAG_COPIED | target)  # hostile: guest cluster 1 "owns" that cluster
    before = _file_bytes(path, target, CS)

    with open_chain(path, writable=True) as chain:
        with pytest.raises(CorruptionError, match='metadata'):
            chain.top.write(CS + 100, b'\xee' * 1000)

    assert _file_bytes(path, target, CS) == before


def test_l2_table_mapped_onto_the_refcount_table_is_not_updated(tmp_path):
    path = _image(tmp_path, size=1 << 30)
    reftable = poke.header(path)['refcount_table_offset']
    poke.set_l1_entry(path, 1, poke.OFLAG_COPIED | reftable)  # hostile: the reftable doubles as an L2 table
    before = _file_bytes(path, reftable, CS)

    with open_chain(path, writable=True) as chain:
        with pytest.raises(CorruptionError, match='metadata'):
            chain.top.write(512 * MiB + 4096, b'\xee' * 4096)

    assert _file_bytes(path, reftable, CS) == before


def test_in_place_rewrites_of_own_clusters_still_work(tmp_path):
    path = _image(tmp_path)
    host = poke.host_cluster(path, 0)
    with open_chain(path, writable=True) as chain:
        chain.top.write(10, b'\x22' * (2 * CS - 20))
    assert poke.host_cluster(path, 0) == host
    with open_chain(path) as chain:
        assert chain.top.read(0, 2 * CS) == b'\x11' * 10 + b'\x22' * (2 * CS - 20) + b'\x11' * 10
    assert check(path)['exit_code'] == 0


# ---- a model: what the guest reads back after any sequence of writes ----

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

GEOMETRIES = {
    '512b': dict(cluster_size=512),
    '4k-1bit': dict(cluster_size=4096, refcount_bits=1),
    'v2': dict(compat='0.10', cluster_size=4096),
    '64k-extl2': dict(cluster_size=65536, extended_l2=True),
    '64k-64bit': dict(cluster_size=65536, refcount_bits=64),
    '2m': dict(cluster_size=2 << 20),
}

ops = st.lists(st.tuples(
    st.sampled_from(['write', 'write', 'zero', 'zero_keep', 'flush']),
    st.floats(0, 1), st.integers(1, 3), st.integers(0, 3), st.integers(1, 255)), min_size=1, max_size=12)


def _length(cs, kind, clusters):
    """1 byte up to several clusters, often unaligned."""
    return {0: 1 + clusters * 37, 1: cs * clusters, 2: cs * clusters + 511, 3: (cs * clusters) // 2 + 1}[kind]


def _run_model(tmp_path, geometry, operations, backing):
    opts = GEOMETRIES[geometry]
    cs = opts['cluster_size']
    size = 5 * cs + 3 * 512 if cs >= 65536 else 40 * cs + 512
    path = str(tmp_path / 'top.qcow2')
    model = bytearray(size)
    if backing:
        base = str(tmp_path / 'base.qcow2')
        create_image(base, CreateOptions(size=size - 2 * 512))  # shorter than the overlay
        with open_chain(base, writable=True) as chain:
            chain.top.write(0, bytes(range(256)) * ((size - 1024) // 256))
        model[:size - 1024] = bytes(range(256)) * ((size - 1024) // 256)
        create_image(path, CreateOptions(size=size, backing_file='base.qcow2', backing_format='qcow2', **opts))
    else:
        create_image(path, CreateOptions(size=size, **opts))
    with open_chain(path, writable=True) as chain:
        img = chain.top
        for op, where, clusters, kind, byte in operations:
            length = min(_length(cs, kind, clusters), size)
            offset = min(int(where * size), size - length)
            if op == 'write':
                img.write(offset, bytes([byte]) * length)
                model[offset:offset + length] = bytes([byte]) * length
            elif op in ('zero', 'zero_keep'):
                img.write_zeroes(offset, length, unmap=op == 'zero')
                model[offset:offset + length] = bytes(length)
            else:
                img.flush()
        assert img.read(0, size) == model
    with open_chain(path) as chain:
        assert chain.top.read(0, size) == model
    result = check(path)
    assert result['exit_code'] == 0, result['messages']


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(operations=ops, backing=st.booleans())
def test_writes_read_back_and_leave_a_clean_image(tmp_path_factory, geometry, operations, backing):
    _run_model(tmp_path_factory.mktemp('model'), geometry, operations, backing)
