"""Commit against qemu-img commit, on copies of the same chains.

Both tools get an identical copy of a chain built by qemu-img/qemu-io. The
base each one wrote must hold the same guest content, the chain must read
from its top what it read before, every touched image must pass qemu-img
check, and qemu-img info must show the chain our contract promises (which,
for a deeper base, differs from qemu-img commit -b by design: we empty the
active image and point it at the base).
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    STANDARD_CHAINS,
    THREE_DEEP,
    assert_clean,
    build_chain,
    copy_images,
    formats,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    qemu_img,
    qemu_img_create,
    qemu_img_info,
    qemu_img_map,
    qemu_io,
)


def _setup(tmp_path, name):
    layers = STANDARD_CHAINS[name]()
    pristine = tmp_path / 'pristine'
    pristine.mkdir()
    build_chain(pristine, layers)
    top = layers[-1].name
    before = view_of(pristine / top, tmp_path)
    ours = copy_images(pristine, tmp_path / 'ours')
    theirs = copy_images(pristine, tmp_path / 'qemu')
    return layers, before, ours, theirs


def _size(path, fmt):
    return qemu_img_info(path, fmt=fmt)['virtual-size']


def _owns_nothing(path):
    """The active state of the image allocates nothing of its own: every read goes to its backing file."""
    return not [e for e in qemu_img_map(path) if e['depth'] == 0 and (e['data'] or e['present'])]


def _snapshots(path):
    return [(s['name'], s['vm-state-size']) for s in qemu_img_info(path).get('snapshots', [])]


@pytest.mark.parametrize('name', list(STANDARD_CHAINS))
def test_commit_active_into_its_backing_file(tmp_path, name):
    layers, before, ours, theirs = _setup(tmp_path, name)
    fmts = formats(layers)
    top, base = layers[-1], layers[-2]

    result = api.commit(str(ours / top.name))
    qemu_img('commit', '-q', '-f', 'qcow2', theirs / top.name)

    assert result.changed is True
    assert result.committed == []
    assert same_view(ours / top.name, before)
    assert same_view(theirs / top.name, before)
    assert same_view(ours / base.name, theirs / base.name)
    assert _size(ours / base.name, base.fmt) == _size(theirs / base.name, base.fmt) == top_size(layers)
    assert backing_chain(ours / top.name) == [(str(ours / layer.name), layer.fmt) for layer in reversed(layers)]
    assert _owns_nothing(ours / top.name)
    assert _snapshots(ours / top.name) == _snapshots(theirs / top.name)
    assert _snapshots(ours / base.name) == _snapshots(theirs / base.name)
    assert_clean([ours / layer.name for layer in layers], fmts)

    again = api.commit(str(ours / top.name))
    assert again.changed is False


def top_size(layers):
    return max(int(layer.size) for layer in layers if layer.size is not None)


@pytest.mark.parametrize('name', THREE_DEEP)
def test_commit_active_into_a_deeper_base(tmp_path, name):
    layers, before, ours, theirs = _setup(tmp_path, name)
    fmts = formats(layers)
    top, mid, base = layers[2], layers[1], layers[0]

    result = api.commit(str(ours / top.name), base=str(ours / base.name))
    qemu_img('commit', '-q', '-f', 'qcow2', '-b', base.name, top.name, cwd=theirs)

    assert result.changed is True
    assert result.committed == [str(ours / mid.name)]
    assert result.removed == []
    assert same_view(ours / base.name, theirs / base.name)
    assert same_view(ours / top.name, before)
    assert same_view(theirs / top.name, before)
    # ours: the active image is emptied and reads through to the base; the mid layer left the chain
    assert backing_chain(ours / top.name) == [(str(ours / top.name), 'qcow2'), (str(ours / base.name), base.fmt)]
    assert qemu_img_info(ours / top.name)['backing-filename'] == base.name  # stays relative like the name it replaced
    assert _owns_nothing(ours / top.name)
    assert _snapshots(ours / top.name) == _snapshots(theirs / top.name)
    assert os.path.exists(ours / mid.name)
    assert_clean([ours / layer.name for layer in layers], fmts)

    again = api.commit(str(ours / top.name), base=str(ours / base.name))
    assert again.changed is False


@pytest.mark.parametrize('name', THREE_DEEP)
def test_commit_intermediate_layer_repoints_the_image_above(tmp_path, name):
    layers, before, ours, theirs = _setup(tmp_path, name)
    fmts = formats(layers)
    top, mid, base = layers[2], layers[1], layers[0]
    top_map = qemu_img_map(ours / top.name)

    result = api.commit(str(ours / top.name), top=str(ours / mid.name))
    qemu_img('commit', '-q', '-f', 'qcow2', mid.name, cwd=theirs)

    assert result.changed is True
    assert result.committed == [str(ours / mid.name)]
    assert same_view(ours / base.name, theirs / base.name)
    assert same_view(ours / top.name, before)
    assert same_view(theirs / top.name, before)
    assert backing_chain(ours / top.name) == [(str(ours / top.name), 'qcow2'), (str(ours / base.name), base.fmt)]
    assert qemu_img_info(ours / top.name)['backing-filename'] == base.name
    assert [e for e in qemu_img_map(ours / top.name) if e['depth'] == 0 and e['data']] == \
        [e for e in top_map if e['depth'] == 0 and e['data']]
    assert_clean([ours / layer.name for layer in layers], fmts)

    again = api.commit(str(ours / top.name), top=str(ours / mid.name))
    assert again.changed is False
    assert 'not in the backing chain' in again.msg


def test_commit_can_delete_the_layers_that_left_the_chain(tmp_path):
    layers, before, ours, _theirs = _setup(tmp_path, 'c64k-v3')
    top, mid, base = (ours / layer.name for layer in reversed(layers))

    result = api.commit(str(top), base=str(base), remove_committed=True)

    assert result.removed == [str(mid)]
    assert not mid.exists()
    assert same_view(top, before)
    assert backing_chain(top) == [(str(top), 'qcow2'), (str(base), 'qcow2')]
    assert_clean([top, base])


def test_commit_intermediate_with_removal_keeps_the_active_image(tmp_path):
    layers, before, ours, _theirs = _setup(tmp_path, 'raw-base')
    top, mid, base = (ours / layer.name for layer in reversed(layers))

    result = api.commit(str(top), top=str(mid), remove_committed=True)

    assert result.removed == [str(mid)]
    assert not mid.exists() and top.exists()
    assert same_view(top, before)
    assert backing_chain(top) == [(str(top), 'qcow2'), (str(base), 'raw')]


@pytest.mark.parametrize('compat', ['1.1', '0.10'])
def test_commit_of_a_short_intermediate_layer_keeps_zeros_past_its_end(tmp_path, compat):
    """top (4M) -> mid (1M) -> base (4M of 0x01): past mid's end the top read zeros, and must still once it reads base."""
    opts = {'compat': compat, 'cluster_size': 512}
    base = qemu_img_create(tmp_path / 'base.qcow2', '4M', options=opts)
    qemu_io(base, 'write -P 1 0 4M')
    mid = qemu_img_create(tmp_path / 'mid.qcow2', '1M', backing='base.qcow2', options=opts, cwd=tmp_path)
    qemu_io(mid, 'write -P 2 4k 4k')
    top = qemu_img_create(tmp_path / 'top.qcow2', '4M', backing='mid.qcow2', options=opts, cwd=tmp_path)
    qemu_io(top, 'write -P 3 0 512', 'write -P 3 3M 512')

    api.commit(str(top), top=str(mid))

    qemu_io(top, 'read -P 3 0 512', 'read -P 1 512 3584', 'read -P 2 4k 4k', 'read -P 1 8k 1040384',
            'read -P 0 1M 2M', 'read -P 3 3M 512', 'read -P 0 3146240 1048064')
    assert backing_chain(top) == [(str(top), 'qcow2'), (str(base), 'qcow2')]
    assert_clean([top, base])


def test_commit_of_an_empty_overlay_larger_than_its_base_grows_the_base(tmp_path):
    """qemu iotest 274 (commit top -> mid): the base grows to the top's size even when there is no data to copy."""
    base = qemu_img_create(tmp_path / 'base.qcow2', '2M')
    qemu_io(base, 'write -P 1 0 2M')
    mid = qemu_img_create(tmp_path / 'mid.qcow2', '1M', backing='base.qcow2', cwd=tmp_path)
    top = qemu_img_create(tmp_path / 'top.qcow2', '2M', backing='mid.qcow2', cwd=tmp_path)
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    plan = api.plan_commit(str(top))
    result = api.commit(str(top))
    qemu_img('commit', '-q', theirs / 'top.qcow2')

    assert plan.changed is result.changed is True
    assert qemu_img_info(mid)['virtual-size'] == qemu_img_info(theirs / 'mid.qcow2')['virtual-size'] == 2 * 1024 * 1024
    qemu_io(mid, 'read -P 1 0 1M', 'read -P 0 1M 1M')
    qemu_io(top, 'read -P 1 0 1M', 'read -P 0 1M 1M')
    assert same_view(mid, theirs / 'mid.qcow2')
    assert_clean([top, mid, base])
    assert api.commit(str(top)).changed is False


def test_commit_of_zeros_into_a_sparse_raw_base_keeps_it_sparse(tmp_path):
    """Zero ranges committed into a raw base must not allocate disk space: RawImage.write_zeroes punches a
    hole (fallocate PUNCH_HOLE|KEEP_SIZE, as qemu's file-posix does) instead of writing 64 MiB of zeros.
    """
    base = qemu_img_create(tmp_path / 'base.raw', '64M', fmt='raw')
    qemu_io(base, 'write -P 1 0 1M', fmt='raw')
    top = qemu_img_create(tmp_path / 'top.qcow2', backing='base.raw', backing_fmt='raw', cwd=tmp_path)
    qemu_io(top, 'write -z 0 64M')
    theirs = copy_images(tmp_path, tmp_path / 'qemu')

    api.commit(str(top))
    qemu_img('commit', '-q', theirs / 'top.qcow2')

    qemu_io(base, 'read -P 0 0 64M', fmt='raw')
    assert same_view(base, theirs / 'base.raw')
    assert os.stat(theirs / 'base.raw').st_blocks * 512 < 1024 * 1024  # qemu: holes
    assert os.stat(base).st_blocks * 512 < 1024 * 1024
