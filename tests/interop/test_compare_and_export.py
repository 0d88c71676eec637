"""The engine's whole-view reads against qemu-img: differing_ranges (qemu-img compare), export_raw (qemu-img
convert -O raw) and read_view, on chains qemu wrote with data, zero clusters, compressed clusters and layers of
different sizes."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, Layer, build_chain
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_compare, qemu_img, qemu_io, raw_of

CHAIN = [
    Layer('base.qcow2', 4 * MiB, steps=('write -P 0x11 0 2M', 'write -c -P 0x12 2M 128k')),
    Layer('top.qcow2', 6 * MiB, steps=('write -P 0x21 1M 4k', 'write -z 0 64k', 'write -P 0x22 5M 512')),
]


@pytest.fixture
def chain(tmp_path):
    return build_chain(tmp_path, CHAIN)[0]


def test_export_raw_matches_qemu_convert(chain, tmp_path):
    dest = tmp_path / 'out.raw'
    written = api.export_raw(str(chain), str(dest))
    expected = raw_of(chain, tmp_path)
    assert dest.read_bytes() == expected.read_bytes()
    assert written <= 2 * MiB + 128 * 1024 + 64 * 1024
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_read_view_reads_every_data_byte(chain):
    assert api.read_view(str(chain)) >= 2 * MiB


@pytest.mark.parametrize('change,same', [
    (None, True),
    ('write -P 0x21 1M 1', True),  # the same byte again
    ('write -P 0x99 3M 1', False),
    ('write -z 1M 4k', False),
    ('write -P 0x01 5M+4k 1', False),  # past the shorter image's end
])
def test_differing_ranges_agrees_with_qemu_compare(chain, tmp_path, change, same):
    other = tmp_path / 'other.qcow2'
    qemu_img('convert', '-O', 'qcow2', chain, other)
    if change:
        qemu_io(other, change.replace('5M+4k', str(5 * MiB + 4096)))
    found = api.differing_ranges(str(chain), str(other))
    assert (found == []) == same == qemu_compare(chain, other)
    if not same:
        offset = found[0][0]
        assert offset % 512 == 0 and found[0][1] >= 512


def test_differing_ranges_of_different_sizes(chain, tmp_path):
    base = tmp_path / 'base.qcow2'
    # top is 6 MiB, base 4 MiB: past 4 MiB top holds 512 bytes of data, so they differ there (and before)
    found = api.differing_ranges(str(base), str(chain))
    assert (5 * MiB, 512) in found
    assert qemu_compare(base, chain) is False
