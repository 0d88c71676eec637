"""recording_writes: every byte range of a file that an engine operation changes is reported, so that digests of
the file's parts can be brought up to date by reading only those parts (the backup store's merge does)."""

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.digests import Hashing, reseal, seal, seal_new
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import MiB, Layer, build_chain

PART = 4096


@pytest.mark.parametrize('top_steps', [
    ('write -P 0x21 0 64k', 'write -z 1M 128k', 'write -P 0x22 7M 1M'),  # overwrites, zeroes, new clusters
    ('write -P 0x23 9M 2M',),  # past the base's end: the base grows
    ('discard 0 1M',),
])
@pytest.mark.parametrize('hashing', [Hashing(PART, None), Hashing(4 * PART, PART)], ids=['format-1', 'format-2'])
def test_commit_reports_every_range_it_changes(tmp_path, top_steps, hashing):
    top_size = 12 * MiB if '9M' in top_steps[0] else None
    top, base = build_chain(tmp_path, [Layer('base.qcow2', 8 * MiB, steps=('write -P 0x11 0 2M', 'write -c -P 0x12 4M 256k')),
                                       Layer('top.qcow2', top_size, steps=top_steps)])
    before = seal(str(base), hashing)
    with api.recording_writes(str(base), hashing.block) as written:
        api.commit(str(top))
        api.check(str(base), repair='leaks')
    assert written.ranges
    if hashing.block is not None:  # the data clusters' blocks were hashed from the commit's own buffers
        assert any(digest is not None for digest in written.digests.values())
    assert reseal(str(base), hashing, before, written) == seal(str(base), hashing)


def test_other_files_are_not_recorded(tmp_path):
    base, = build_chain(tmp_path, [Layer('base.qcow2', MiB)])
    other, = build_chain(tmp_path, [Layer('other.qcow2', MiB)])
    with api.recording_writes(str(base)) as written:
        api.change_bitmap(str(other), 'add', 'b')
    assert written.ranges == []
    with api.recording_writes(str(base)) as written:
        api.change_bitmap(str(base), 'add', 'b')
    assert written.ranges


@pytest.mark.parametrize('operation', ['convert', 'copy_ranges'])
def test_a_new_image_is_hashed_from_its_write_buffers(tmp_path, operation):
    """The backup store seals a new layer without reading it back: the digests of the blocks written whole come
    from the engine's write buffers (hashed in its writer threads), the few others are read."""
    block = 65536
    hashing = Hashing(16 * block, block)
    base, = build_chain(tmp_path, [Layer('base.qcow2', 64 * MiB, steps=(
        'write -P 0x31 0 9M', 'write -P 0x32 20M 4M', 'write -z 30M 2M', 'write -P 0x33 40M 64k',
        'write -P 0x34 50M 3M'))])
    dest = tmp_path / 'layer.qcow2'
    with api.recording_new_image(str(dest), hashing.block) as written:
        if operation == 'convert':
            api.convert(str(base), str(dest))
        else:
            api.copy_ranges(str(base), str(dest), [(0, 10 * MiB), (29 * MiB, 12 * MiB), (50 * MiB, 3 * MiB)])
    assert seal_new(str(dest), hashing, written) == seal(str(dest), hashing)
    hashed = sum(digest is not None for digest in written.digests.values())
    assert hashed * block >= (12 if operation == 'convert' else 9) * MiB  # the data clusters, at least
    other = tmp_path / 'other.qcow2'
    with api.recording_new_image(str(other), hashing.block) as unused:
        api.convert(str(base), str(tmp_path / 'third.qcow2'))
    assert unused.ranges == [] and unused.identity is None


@pytest.mark.parametrize('base_options,top_options', [
    ({}, {}),  # same geometry: the L2 entries are compared side by side
    ({'cluster_size': 4096}, {}),  # other cluster sizes: the data extents are paired
    ({}, {'extended_l2': 'on', 'cluster_size': 131072}),  # subclusters in top
    ({'extended_l2': 'on'}, {}),  # subclusters in base
], ids=['same', 'small-base-clusters', 'top-subclusters', 'base-subclusters'])
def test_a_commit_notes_which_base_blocks_are_copies_of_top_blocks(tmp_path, base_options, top_options):
    """With a from_copies record on base, every block the commit notes as a copy of a block of top holds the same
    bytes as that block (compressed, zeroed and partly written clusters included in top); nothing is hashed."""
    top, base = build_chain(tmp_path, [
        Layer('base.qcow2', 8 * MiB, options=base_options, steps=('write -P 0x11 0 2M',)),
        Layer('top.qcow2', options=top_options, steps=(
            'write -P 0x21 64k 64k', 'write -P 0x22 1M 3M', 'write -P 0x23 5000 3000', 'write -c -P 0x24 6M 128k',
            'write -z 7M 64k', 'write -P 0x25 7340032 4096'))])
    with api.recording_writes(str(base), PART, from_copies=True) as written:
        api.commit(str(top), empty_top=False)
    assert all(digest is None for digest in written.digests.values())
    assert len(written.copied) >= (3 * MiB) // PART
    with open(base, 'rb') as base_file, open(top, 'rb') as top_file:
        for index, (_origin, source_index) in written.copied.items():
            base_file.seek(index * PART)
            top_file.seek(source_index * PART)
            assert base_file.read(PART) == top_file.read(PART), index
    assert api.check(str(base))['result'].get('corruptions', 0) == 0
