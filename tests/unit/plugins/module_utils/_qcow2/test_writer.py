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
