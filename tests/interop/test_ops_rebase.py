"""Rebase against qemu-img rebase (safe and unsafe), on copies of the same chains."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    STANDARD_CHAINS,
    THREE_DEEP,
    TOP_SIZE,
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
    # an unrelated image to rebase onto: longer than the old backing files, shorter than the top
    other = qemu_img_create(pristine / 'other.qcow2', 7 * 1024 * 1024, options={'cluster_size': 16384})
    qemu_io(other, 'write -P 0x41 0 2M', 'write -P 0x11 3M 1M', 'write -z 4M 512k', 'write -P 0x42 5M 2M')
    before = view_of(pristine / layers[-1].name, tmp_path)
    ours = copy_images(pristine, tmp_path / 'ours')
    theirs = copy_images(pristine, tmp_path / 'qemu')
    return layers, before, ours, theirs


def _own_map(path):
    """The data the image itself holds, with host offsets (zero ranges merge differently over other backing files)."""
    return [e for e in qemu_img_map(path) if e['depth'] == 0 and e['data']]


@pytest.mark.parametrize('name', THREE_DEEP)
def test_safe_rebase_onto_a_deeper_image_of_the_chain(tmp_path, name):
    layers, before, ours, theirs = _setup(tmp_path, name)
    top, base = layers[-1], layers[0]

    result = api.rebase(str(ours / top.name), base.name, base.fmt)
    qemu_img('rebase', '-q', '-f', 'qcow2', '-b', base.name, '-F', base.fmt, top.name, cwd=theirs)

    assert result.changed is True and result.header_only is False
    assert result.old_backing == 'mid.qcow2' and result.new_backing == base.name
    assert same_view(ours / top.name, before)
    assert same_view(theirs / top.name, before)
    assert same_view(ours / top.name, theirs / top.name)
    assert backing_chain(ours / top.name) == [(str(ours / top.name), 'qcow2'), (str(ours / base.name), base.fmt)]
    assert qemu_img_info(ours / top.name)['backing-filename'] == base.name
    assert_clean([ours / layer.name for layer in layers], formats(layers))
    assert api.rebase(str(ours / top.name), base.name, base.fmt).changed is False


@pytest.mark.parametrize('name', list(STANDARD_CHAINS))
def test_safe_rebase_onto_an_unrelated_image(tmp_path, name):
    layers, before, ours, theirs = _setup(tmp_path, name)
    top = layers[-1]

    result = api.rebase(str(ours / top.name), 'other.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-f', 'qcow2', '-b', 'other.qcow2', '-F', 'qcow2', top.name, cwd=theirs)

    assert result.changed is True and result.header_only is False
    assert result.bytes_copied > 0
    assert same_view(ours / top.name, before)
    assert same_view(theirs / top.name, before)
    assert backing_chain(ours / top.name) == [(str(ours / top.name), 'qcow2'), (str(ours / 'other.qcow2'), 'qcow2')]
    assert_clean([ours / layer.name for layer in layers] + [ours / 'other.qcow2'], formats(layers))
    assert api.rebase(str(ours / top.name), 'other.qcow2', 'qcow2').changed is False


@pytest.mark.parametrize('name', list(STANDARD_CHAINS))
def test_flatten_in_place(tmp_path, name):
    layers, before, ours, theirs = _setup(tmp_path, name)
    top = layers[-1]

    result = api.rebase(str(ours / top.name), '')
    qemu_img('rebase', '-q', '-f', 'qcow2', '-b', '', top.name, cwd=theirs)

    assert result.changed is True and result.new_backing == ''
    assert same_view(ours / top.name, before)
    assert same_view(ours / top.name, theirs / top.name)
    assert backing_chain(ours / top.name) == [(str(ours / top.name), 'qcow2')]
    assert qemu_img_info(ours / top.name)['virtual-size'] == TOP_SIZE
    assert_clean([ours / layer.name for layer in layers], formats(layers))
    assert api.rebase(str(ours / top.name), '').changed is False


@pytest.mark.parametrize('name', ['c64k-v3', 'raw-base', 'two-deep'])
def test_unsafe_rebase_changes_only_the_header(tmp_path, name):
    layers, _before, ours, theirs = _setup(tmp_path, name)
    top = ours / layers[-1].name
    data_before = _own_map(top)
    size_before = os.path.getsize(top)

    result = api.rebase(str(top), 'other.qcow2', 'qcow2', unsafe=True)
    qemu_img('rebase', '-q', '-u', '-f', 'qcow2', '-b', 'other.qcow2', '-F', 'qcow2', layers[-1].name, cwd=theirs)

    assert result.changed is True and result.header_only is True and result.bytes_copied == 0
    ours_info, theirs_info = qemu_img_info(top), qemu_img_info(theirs / layers[-1].name)
    for key in ('backing-filename', 'backing-filename-format', 'full-backing-filename'):
        assert ours_info[key].replace(str(ours), '') == theirs_info[key].replace(str(theirs), '')
    assert _own_map(top) == data_before
    assert os.path.getsize(top) == size_before
    assert same_view(top, theirs / layers[-1].name)
    assert_clean([top])
    assert api.rebase(str(top), 'other.qcow2', 'qcow2', unsafe=True).changed is False


def test_rebase_to_the_same_name_changes_nothing(tmp_path):
    layers, _before, ours, _theirs = _setup(tmp_path, 'c64k-v3')
    top = ours / layers[-1].name
    mtime = top.stat().st_mtime_ns

    result = api.rebase(str(top), 'mid.qcow2', 'qcow2')

    assert result.changed is False
    assert top.stat().st_mtime_ns == mtime


@pytest.mark.parametrize('spelling', ['absolute', 'hard link', 'symlink'])
def test_rebase_to_another_name_of_the_same_file_is_header_only(tmp_path, spelling):
    layers, before, ours, _theirs = _setup(tmp_path, 'c64k-v3')
    top = ours / layers[-1].name
    data_before = _own_map(top)
    if spelling == 'absolute':
        name = str(ours / 'mid.qcow2')
    elif spelling == 'hard link':
        os.link(ours / 'mid.qcow2', ours / 'mid-link.qcow2')
        name = 'mid-link.qcow2'
    else:
        os.symlink('mid.qcow2', ours / 'mid-sym.qcow2')
        name = 'mid-sym.qcow2'

    result = api.rebase(str(top), name, 'qcow2')

    assert result.changed is True and result.header_only is True and result.bytes_copied == 0
    assert qemu_img_info(top)['backing-filename'] == name
    assert _own_map(top) == data_before
    assert same_view(top, before)
    assert_clean([top])


def test_safe_rebase_of_an_intermediate_layer(tmp_path):
    """Rebasing the middle of a chain keeps what the top reads: the middle layer keeps its view."""
    _layers, before, ours, theirs = _setup(tmp_path, 'mixed-clusters')
    mid_before = view_of(ours / 'mid.qcow2', tmp_path)

    result = api.rebase(str(ours / 'mid.qcow2'), 'other.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-f', 'qcow2', '-b', 'other.qcow2', '-F', 'qcow2', 'mid.qcow2', cwd=theirs)

    assert result.changed is True
    assert same_view(ours / 'mid.qcow2', mid_before)
    assert same_view(ours / 'top.qcow2', before)
    assert same_view(ours / 'mid.qcow2', theirs / 'mid.qcow2')
    expected = [(str(ours / name), 'qcow2') for name in ('top.qcow2', 'mid.qcow2', 'other.qcow2')]
    assert backing_chain(ours / 'top.qcow2') == expected
    assert_clean([ours / 'mid.qcow2', ours / 'top.qcow2', ours / 'other.qcow2'])


@pytest.mark.parametrize('unrelated', [False, True])
def test_safe_rebase_where_a_zero_range_ends_inside_a_cluster(tmp_path, unrelated):
    """The dropped layer (512-byte clusters) holds zeros then data inside one 64k cluster of the image: the zeros'
    copy-on-write must keep the old view for the rest of that cluster, not read the new backing file."""
    base = qemu_img_create(tmp_path / 'base.qcow2', 2 * 1024 * 1024)
    qemu_io(base, 'write -P 0x11 0 2M')
    mid = qemu_img_create(tmp_path / 'mid.qcow2', backing='base.qcow2', options={'cluster_size': 512}, cwd=tmp_path)
    qemu_io(mid, 'write -P 0x22 0 256k', 'write -z 60k 40k')
    top = qemu_img_create(tmp_path / 'top.qcow2', backing='mid.qcow2', cwd=tmp_path)
    before = view_of(top, tmp_path)
    if unrelated:
        other = qemu_img_create(tmp_path / 'other.qcow2', 2 * 1024 * 1024)
        qemu_io(other, 'write -P 0x33 0 2M')

    api.rebase(str(top), 'other.qcow2' if unrelated else 'base.qcow2', 'qcow2')

    qemu_io(top, 'read -P 0x22 0 60k', 'read -P 0 60k 40k', 'read -P 0x22 100k 156k', 'read -P 0x11 256k 1792k')
    assert same_view(top, before)
    assert_clean([top])


def test_in_chain_rebase_copies_only_what_the_dropped_layers_hold(tmp_path):
    """Metadata decides: only the dropped layer's 64k can differ, not the 64M of data the new base holds."""
    base = qemu_img_create(tmp_path / 'base.qcow2', 64 * 1024 * 1024)
    qemu_io(base, 'write -P 1 0 64M')
    mid = qemu_img_create(tmp_path / 'mid.qcow2', backing='base.qcow2', cwd=tmp_path)
    qemu_io(mid, 'write -P 2 1M 64k')
    top = qemu_img_create(tmp_path / 'top.qcow2', backing='mid.qcow2', cwd=tmp_path)
    before = view_of(top, tmp_path)

    result = api.rebase(str(top), 'base.qcow2', 'qcow2')

    assert result.bytes_copied == 64 * 1024
    assert same_view(top, before)
    assert [(e['start'], e['length']) for e in qemu_img_map(top) if e['depth'] == 0 and e['data']] == [(1024 * 1024, 65536)]


def test_safe_rebase_of_a_standalone_image_keeps_its_zeros_like_qemu(tmp_path):
    """An image without a backing file reads zeros where it is unallocated; a safe rebase onto a base full of
    data must keep those zeros (qemu-img rebase does), and check mode predicts the bytes it then writes."""
    img = qemu_img_create(tmp_path / 'img.qcow2', '8M')
    qemu_io(img, 'write -P 3 1M 1M')
    base = qemu_img_create(tmp_path / 'base.qcow2', '8M')
    qemu_io(base, 'write -P 9 0 8M')
    theirs = tmp_path / 'theirs'
    theirs.mkdir()
    for name in ('img.qcow2', 'base.qcow2'):
        qemu_img('convert', '-O', 'qcow2', tmp_path / name, theirs / name)
    before = view_of(img, tmp_path)

    planned = api.plan_rebase(str(img), 'base.qcow2', 'qcow2')
    done = api.rebase(str(img), 'base.qcow2', 'qcow2')
    qemu_img('rebase', '-q', '-b', 'base.qcow2', '-F', 'qcow2', theirs / 'img.qcow2', cwd=theirs)

    assert planned.changed and done.changed
    assert planned.bytes_copied == done.bytes_copied == 7 * 1024 * 1024
    assert same_view(img, before) and same_view(img, theirs / 'img.qcow2')
    assert backing_chain(img)[1:] == [(str(base), 'qcow2')]
    assert_clean([img])


def test_check_mode_predicts_the_bytes_of_an_in_chain_rebase(tmp_path):
    layers, before, ours, _theirs = _setup(tmp_path, THREE_DEEP[0])
    top = ours / layers[-1].name
    base_name = layers[0].name
    base_format = formats(layers)[base_name]
    planned = api.plan_rebase(str(top), base_name, base_format)
    done = api.rebase(str(top), base_name, base_format)
    assert planned.bytes_copied == done.bytes_copied > 0
    assert same_view(top, before)
