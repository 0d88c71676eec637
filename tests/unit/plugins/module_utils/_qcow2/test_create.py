"""Creating images: qemu-img create's option rules and messages, and qemu's initial layout."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import check, create_image, image_info
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError
from ansible_collections.backingchain.qcow2.tests.helpers import qcow2_poke as poke

MiB = 1 << 20


@pytest.mark.parametrize('opts, message', [
    (dict(cluster_size=256), 'Cluster size must be a power of two between 512 and 2097152'),
    (dict(cluster_size=4 << 20), 'Cluster size'),
    (dict(cluster_size=65537), 'Cluster size'),
    (dict(compat='2.0'), 'Invalid compatibility level'),
    (dict(refcount_bits=3), 'Refcount width must be a power of two and may not exceed 64 bits'),
    (dict(refcount_bits=128), 'may not exceed 64 bits'),
    (dict(compat='0.10', refcount_bits=8), 'require compatibility level 1.1'),
    (dict(compat='0.10', lazy_refcounts=True), 'Lazy refcounts only supported with compatibility level 1.1'),
    (dict(compat='0.10', extended_l2=True), 'Extended L2 entries are only supported with compatibility level 1.1'),
    (dict(cluster_size=8192, extended_l2=True), 'cluster sizes of at least 16384'),
    (dict(compression_type='lz4'), 'Unknown compression type'),
    (dict(compat='0.10', compression_type='zstd'), 'compatibility level 1.1'),
    (dict(preallocation='sparse'), 'Invalid preallocation mode'),
    (dict(backing_file='b.qcow2'), 'Backing file specified without backing format'),
    (dict(backing_file='b.qcow2', backing_format='vmdk'), 'Backing format must be qcow2 or raw'),
    (dict(backing_file='b.qcow2', backing_format='qcow2', preallocation='metadata'),
     'Backing file and preallocation can only be used at the same time if extended_l2 is on'),
    (dict(size=1000), 'multiple of 512'),
    (dict(size=-512), 'non-negative'),
    (dict(size=None), 'Image size must be given'),
])
def test_invalid_options(tmp_path, opts, message):
    opts.setdefault('size', MiB)
    with pytest.raises(InvalidArgumentError, match=message):
        create_image(str(tmp_path / 'a.qcow2'), CreateOptions(**opts))
    assert not os.path.exists(tmp_path / 'a.qcow2')


def test_existing_files_are_kept_unless_overwrite(tmp_path):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=MiB))
    with pytest.raises(InvalidArgumentError, match='File exists'):
        create_image(path, CreateOptions(size=2 * MiB))
    create_image(path, CreateOptions(size=2 * MiB), overwrite=True)
    assert image_info(path)[0]['virtual-size'] == 2 * MiB


@pytest.mark.parametrize('cluster_size', [512, 4096, 65536, 2 << 20])
def test_qemus_initial_layout(tmp_path, cluster_size):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=64 * MiB, cluster_size=cluster_size))
    hdr = poke.header(path)
    assert hdr['refcount_table_offset'] == cluster_size  # header, refcount table, refcount block, L1
    assert poke.reftable_entry(path, 0) == 2 * cluster_size
    assert hdr['l1_table_offset'] == 3 * cluster_size
    assert [poke.refcount(path, c) for c in range(4)] == [1, 1, 1, 1]
    assert check(path)['exit_code'] == 0


def test_size_defaults_to_the_backing_file(tmp_path):
    create_image(str(tmp_path / 'base.qcow2'), CreateOptions(size=3 * MiB))
    create_image(str(tmp_path / 'top.qcow2'), CreateOptions(backing_file='base.qcow2', backing_format='qcow2'))
    with open_chain(str(tmp_path / 'top.qcow2')) as chain:
        assert chain.top.size == 3 * MiB and chain.top.backing_filename == 'base.qcow2'


@pytest.mark.parametrize('mode', ['metadata', 'falloc', 'full'])
def test_preallocation_maps_every_cluster_and_reads_zeros(tmp_path, mode):
    path = str(tmp_path / 'a.qcow2')
    create_image(path, CreateOptions(size=MiB + 512, cluster_size=65536, preallocation=mode))
    with open_chain(path) as chain:
        assert [e.kind for e in chain.top.extents(0, chain.top.size)] == ['data']
        assert chain.top.read(0, chain.top.size) == bytes(MiB + 512)
    blocks = os.stat(path).st_blocks * 512
    assert (blocks > MiB) == (mode != 'metadata')
    assert check(path)['exit_code'] == 0
