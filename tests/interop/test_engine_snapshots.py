"""Internal snapshots made by the engine, interleaved with guest writes, as qemu sees them: qemu-img check
clean after every step, qemu-img snapshot -l lists them, and each reads back with convert -l."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import (
    create_image, create_snapshot, delete_snapshot, list_snapshots, revert_snapshot)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.tests.helpers.limits import examples
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    qemu_img, qemu_img_check, qemu_img_info, raw_of)

MiB = 1 << 20
EXAMPLES = examples(15)

GEOMETRIES = {
    '64k': dict(cluster_size=65536),
    '4k-v2': dict(cluster_size=4096, compat='0.10'),
    '512-refcount4': dict(cluster_size=512, refcount_bits=4),
    '64k-extl2': dict(cluster_size=65536, extended_l2=True),
}


def qemu_snapshot_names(path):
    """Names in 'qemu-img snapshot -l' (its table: ID, TAG, VM SIZE, DATE, ...)."""
    lines = qemu_img('snapshot', '-l', '-U', path).splitlines()
    return [re.split(r'\s+', line.strip())[1] for line in lines[2:] if line.strip()]


def snapshot_content(path, name, directory):
    out = directory / ('snap-%s.raw' % name)
    qemu_img('convert', '-U', '-l', 'snapshot.name=' + name, '-O', 'raw', path, out)
    data = out.read_bytes()
    out.unlink()
    return data


class Model:
    """What the guest should see now, and in each snapshot."""

    def __init__(self, path, size, directory):
        self.path, self.size, self.dir = path, size, directory
        self.active = bytearray(size)
        self.snapshots = {}

    def write(self, offset, length, byte, zero):
        with open_chain(str(self.path), writable=True) as chain:
            if zero:
                chain.top.write_zeroes(offset, length)
            else:
                chain.top.write(offset, bytes([byte]) * length)
        self.active[offset:offset + length] = bytes(length) if zero else bytes([byte]) * length

    def create(self, name):
        info = create_snapshot(str(self.path), name)
        assert info['name'] == name
        self.snapshots[name] = bytes(self.active)

    def revert(self, name):
        revert_snapshot(str(self.path), name)
        self.active = bytearray(self.snapshots[name])

    def delete(self, name):
        delete_snapshot(str(self.path), name)
        del self.snapshots[name]

    def verify(self):
        result = qemu_img_check(self.path)
        assert result.clean, result.report
        assert raw_of(self.path, dest_dir=self.dir).read_bytes() == bytes(self.active)
        assert sorted(qemu_snapshot_names(self.path)) == sorted(self.snapshots)
        assert [s['name'] for s in list_snapshots(str(self.path))] == [
            s['name'] for s in qemu_img_info(self.path).get('snapshots', [])]
        for name, content in self.snapshots.items():
            assert snapshot_content(self.path, name, self.dir) == content, name


steps = st.lists(st.tuples(st.sampled_from(['write', 'write', 'zero', 'create', 'revert', 'delete']),
                           st.floats(0, 1, exclude_max=True), st.integers(1, 3 * 65536), st.integers(1, 255)),
                 min_size=3, max_size=10)


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=steps)
def test_snapshots_interleaved_with_writes(tmp_path_factory, geometry, plan):
    d = tmp_path_factory.mktemp('snap')
    size = 2 * MiB
    path = d / 'a.qcow2'
    create_image(str(path), CreateOptions(size=size, **GEOMETRIES[geometry]))
    model = Model(path, size, d)
    limit = 2 if geometry == '512-refcount4' else 6  # 4-bit refcounts: at most 15 references to a cluster
    for i, (op, where, length, byte) in enumerate(plan):
        offset = int(where * size)
        length = min(length, size - offset)
        if op in ('write', 'zero'):
            model.write(offset, length, byte, op == 'zero')
        elif op == 'create' and len(model.snapshots) < limit:
            model.create('snap%d' % i)
        elif op == 'revert' and model.snapshots:
            model.revert(sorted(model.snapshots)[byte % len(model.snapshots)])
        elif op == 'delete' and model.snapshots:
            model.delete(sorted(model.snapshots)[byte % len(model.snapshots)])
        else:
            continue
        model.verify()


def test_qemu_and_the_engine_take_turns(tmp_image_dir):
    """Snapshots qemu made, reverted and deleted by the engine, and the other way round."""
    path = tmp_image_dir / 'a.qcow2'
    create_image(str(path), CreateOptions(size=4 * MiB))
    model = Model(path, 4 * MiB, tmp_image_dir)
    model.write(0, MiB, 1, False)
    qemu_img('snapshot', '-c', 'by-qemu', path)
    model.snapshots['by-qemu'] = bytes(model.active)
    model.write(512 * 1024, MiB, 2, False)
    model.create('by-engine')
    model.verify()
    model.revert('by-qemu')
    model.verify()
    qemu_img('snapshot', '-a', 'by-engine', path)
    model.active = bytearray(model.snapshots['by-engine'])
    model.delete('by-qemu')
    model.verify()
    qemu_img('snapshot', '-d', 'by-engine', path)
    del model.snapshots['by-engine']
    model.verify()


def test_example_counts_are_recorded(record_property):
    record_property('interop_figures', ('hypothesis examples', {
        'test': 'engine snapshots vs qemu', 'per_config': EXAMPLES, 'configs': len(GEOMETRIES),
        'total': EXAMPLES * len(GEOMETRIES)}))
