"""Bad and hostile input for the chain operations: typed errors with clear messages, and nothing changed on disk."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import (
    BackingChainError,
    ImageLockedError,
    InvalidArgumentError,
    NoSpaceError,
    UnsafeBackingError,
)
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    Layer,
    assert_clean,
    build_chain,
    file_digests,
    file_states,
    fill_filesystem,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    qemu_img_create,
    qemu_io,
    qemu_io_holding,
)

CHAIN = [
    Layer('base.qcow2', 4 * MiB, steps=('write -P 1 0 1M',)),
    Layer('mid.qcow2', steps=('write -P 2 512k 1M',)),
    Layer('top.qcow2', steps=('write -P 3 1M 64k',)),
]


@pytest.fixture
def chain(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, CHAIN)
    other = qemu_img_create(images / 'other.qcow2', 4 * MiB)
    qemu_io(other, 'write -P 9 0 4M')
    qemu_img_create(images / 'plain.raw', 4 * MiB, fmt='raw')
    return images


class Unchanged:
    """Asserts that no file of a directory changed (content, size, mtime) and none appeared or vanished."""

    def __init__(self, directory):
        self.directory = directory
        self.digests = file_digests(directory)
        self.states = file_states(directory)

    def check(self):
        assert file_digests(self.directory) == self.digests
        assert file_states(self.directory) == self.states


def _refused(directory, exc_type, match, fn, *args, **kwargs):
    unchanged = Unchanged(directory)
    with pytest.raises(exc_type, match=match) as err:
        fn(*args, **kwargs)
    unchanged.check()
    return err.value


# ---- commit ----------------------------------------------------------------------------------------------------

def test_commit_of_an_image_that_never_was_in_the_chain(chain):
    _refused(chain, InvalidArgumentError, 'other.qcow2 is not in the backing chain of .*top.qcow2',
             api.commit, str(chain / 'top.qcow2'), top=str(chain / 'other.qcow2'))


def test_commit_of_a_missing_top_is_nothing_to_do(chain):
    """The file a commit with removal deleted: running the task again reports no change, with the reason."""
    unchanged = Unchanged(chain)
    result = api.commit(str(chain / 'top.qcow2'), top=str(chain / 'gone.qcow2'))
    assert result.changed is False and 'does not exist' in result.msg
    unchanged.check()


@pytest.mark.parametrize('top,base,match', [
    ('top.qcow2', 'other.qcow2', "Did not find '.*other.qcow2' in the backing chain of '.*top.qcow2'"),
    ('mid.qcow2', 'top.qcow2', 'Base .*top.qcow2 is not below top .*mid.qcow2'),
    ('mid.qcow2', 'mid.qcow2', 'Base .*mid.qcow2 is not below top .*mid.qcow2'),
    ('base.qcow2', None, 'Image .*base.qcow2 has no backing file to commit into'),
])
def test_commit_with_a_base_not_below_the_top(chain, top, base, match):
    _refused(chain, InvalidArgumentError, match, api.commit, str(chain / 'top.qcow2'), top=str(chain / top),
             base=str(chain / base) if base else None)


@pytest.mark.parametrize('held,read_only,top', [
    ('top.qcow2', False, None),  # a VM runs on the active image
    ('mid.qcow2', False, None),  # something writes the base
    ('top.qcow2', False, 'mid.qcow2'),  # the image to re-point is in use
])
def test_commit_refuses_images_a_running_qemu_holds(chain, held, read_only, top):
    with qemu_io_holding(chain / held, read_only=read_only):
        for fn in (api.plan_commit, api.commit):  # check mode fails the same way
            _refused(chain, ImageLockedError, r'Failed to get "write" lock\nIs another process using the image',
                     fn, str(chain / 'top.qcow2'), top=str(chain / top) if top else None)


def test_commit_refuses_a_base_another_running_vm_reads(chain):
    """A golden image: a second overlay of base is open in qemu, which forbids writes to base."""
    qemu_img_create(chain / 'vm2.qcow2', backing='base.qcow2', cwd=chain)
    with qemu_io_holding(chain / 'vm2.qcow2'):
        for fn in (api.plan_commit, api.commit):
            _refused(chain, ImageLockedError, 'base.qcow2', fn, str(chain / 'top.qcow2'), base=str(chain / 'base.qcow2'))


def test_commit_refuses_when_the_base_filesystem_is_too_small(small_fs):
    build_chain(small_fs, [Layer('base.qcow2', 64 * MiB, steps=('write -P 1 0 1M',)),
                           Layer('top.qcow2', 96 * MiB, steps=('write -P 2 0 6M',))])
    fill_filesystem(small_fs, 3 * MiB)
    err = _refused(small_fs, NoSpaceError, 'Not enough space for commit into .*base.qcow2: it needs up to 6291456 bytes',
                   api.commit, str(small_fs / 'top.qcow2'))
    assert err.path.endswith('base.qcow2')


# ---- rebase ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('unsafe', [False, True])
def test_rebase_onto_itself(chain, unsafe):
    _refused(chain, BackingChainError, 'creates an infinite loop', api.rebase, str(chain / 'top.qcow2'), 'top.qcow2',
             'qcow2', unsafe=unsafe)


@pytest.mark.parametrize('unsafe', [False, True])
@pytest.mark.parametrize('image,onto', [('mid.qcow2', 'top.qcow2'), ('base.qcow2', 'top.qcow2')])
def test_rebase_onto_its_own_overlay(chain, image, onto, unsafe):
    _refused(chain, BackingChainError, "Backing file '.*top.qcow2' creates an infinite loop", api.rebase,
             str(chain / image), onto, 'qcow2', unsafe=unsafe)
    assert len(backing_chain(chain / 'top.qcow2')) == 3


def test_safe_rebase_with_its_old_backing_file_missing_suggests_unsafe(chain):
    os.rename(chain / 'mid.qcow2', chain / 'moved.qcow2')
    _refused(chain, BackingChainError, 'unsafe', api.plan_rebase, str(chain / 'top.qcow2'), 'base.qcow2', 'qcow2')
    err = _refused(chain, BackingChainError, 'mid.qcow2', api.rebase, str(chain / 'top.qcow2'), 'base.qcow2', 'qcow2')
    assert 'No such file or directory' in str(err)
    assert 'unsafe' in str(err)
    # the remedy it suggests works: unsafe only rewrites the header
    assert api.rebase(str(chain / 'top.qcow2'), 'moved.qcow2', 'qcow2', unsafe=True).changed is True
    assert len(backing_chain(chain / 'top.qcow2')) == 3


def test_safe_rebase_onto_a_missing_file(chain):
    _refused(chain, BackingChainError, 'nowhere.qcow2', api.plan_rebase, str(chain / 'top.qcow2'), 'nowhere.qcow2',
             'qcow2')
    _refused(chain, BackingChainError, "New backing file '.*nowhere.qcow2' of '.*top.qcow2'.*No such file or directory",
             api.rebase, str(chain / 'top.qcow2'), 'nowhere.qcow2', 'qcow2')


@pytest.mark.parametrize('unsafe', [False, True])
@pytest.mark.parametrize('onto,fmt,match', [
    ('plain.raw', 'qcow2', 'Backing format mismatch: .*plain.raw is not a qcow2 image'),
    ('other.qcow2', 'raw', 'Backing format mismatch: .*other.qcow2 is a qcow2 image'),
])
def test_rebase_with_the_wrong_backing_format(chain, onto, fmt, match, unsafe):
    _refused(chain, BackingChainError, match, api.rebase, str(chain / 'top.qcow2'), onto, fmt, unsafe=unsafe)


@pytest.mark.parametrize('backing,fmt,exc,match', [
    ('base.qcow2', None, InvalidArgumentError, 'Backing format must be given'),
    ('base.qcow2', 'vmdk', InvalidArgumentError, 'Backing format must be qcow2 or raw'),
    (None, None, InvalidArgumentError, 'backing_file is required'),
    ('json:{"file.filename":"base.qcow2"}', 'qcow2', UnsafeBackingError, 'json: pseudo-protocol'),
    ('nbd:localhost:10809', 'raw', UnsafeBackingError, 'names a protocol'),
])
def test_rebase_with_bad_arguments(chain, backing, fmt, exc, match):
    _refused(chain, exc, match, api.rebase, str(chain / 'top.qcow2'), backing, fmt)


@pytest.mark.parametrize('held,unsafe', [('top.qcow2', False), ('top.qcow2', True), ('other.qcow2', False)])
def test_rebase_refuses_images_a_running_qemu_holds(chain, held, unsafe):
    with qemu_io_holding(chain / held):
        for fn in (api.plan_rebase, api.rebase):
            _refused(chain, ImageLockedError, 'Is another process using the image', fn, str(chain / 'top.qcow2'),
                     'other.qcow2', 'qcow2', unsafe=unsafe)


def test_flatten_refuses_when_the_filesystem_is_too_small(small_fs):
    build_chain(small_fs, [Layer('base.qcow2', 64 * MiB, steps=('write -P 1 0 6M',)),
                           Layer('top.qcow2', steps=('write -P 2 0 64k',))])
    fill_filesystem(small_fs, 3 * MiB)
    _refused(small_fs, NoSpaceError, 'Not enough space for rebase of .*top.qcow2', api.rebase, str(small_fs / 'top.qcow2'), '')


# ---- convert and grow ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('dest', ['top.qcow2', 'mid.qcow2', 'base.qcow2'])
def test_convert_refuses_to_replace_an_image_of_the_source_chain(chain, dest):
    _refused(chain, InvalidArgumentError, 'is part of the backing chain of the source', api.convert,
             str(chain / 'top.qcow2'), str(chain / dest))


def test_convert_refuses_to_replace_its_own_backing_file(chain):
    _refused(chain, InvalidArgumentError, 'would be its own backing file', api.convert, str(chain / 'top.qcow2'),
             str(chain / 'other.qcow2'), backing_file='other.qcow2', backing_format='qcow2')


def test_convert_refuses_a_destination_a_running_qemu_holds(chain):
    dest = qemu_img_create(chain / 'dest.qcow2', MiB)
    with qemu_io_holding(dest):
        _refused(chain, ImageLockedError, 'dest.qcow2', api.convert, str(chain / 'top.qcow2'), str(dest))
    assert_clean([dest])


def test_convert_refuses_a_source_a_running_qemu_writes(chain):
    with qemu_io_holding(chain / 'top.qcow2'):
        _refused(chain, ImageLockedError, 'top.qcow2', api.convert, str(chain / 'top.qcow2'), str(chain / 'flat.qcow2'))


def test_convert_refuses_when_the_destination_filesystem_is_too_small(chain, small_fs):
    qemu_io(chain / 'top.qcow2', 'write -P 4 0 4M')
    fill_filesystem(small_fs, 2 * MiB)
    _refused(small_fs, NoSpaceError, 'Not enough space for writing .*flat.qcow2', api.convert, str(chain / 'top.qcow2'),
             str(small_fs / 'flat.qcow2'))


def test_convert_with_a_backing_file_but_no_format(chain):
    _refused(chain, InvalidArgumentError, 'Backing format must be given', api.convert, str(chain / 'top.qcow2'),
             str(chain / 'x.qcow2'), backing_file='base.qcow2')


def test_grow_refuses_an_image_a_running_qemu_holds(chain):
    with qemu_io_holding(chain / 'top.qcow2'):
        _refused(chain, ImageLockedError, 'top.qcow2', api.grow_image, str(chain / 'top.qcow2'), 8 * MiB)


@pytest.mark.parametrize('dest,match', [('adir', 'Destination .*adir is a directory'),
                                        ('nowhere/flat.qcow2', 'The directory of destination .*nowhere/flat.qcow2 does not')])
def test_convert_to_an_impossible_destination(chain, dest, match):
    (chain / 'adir').mkdir()
    for fn in (api.plan_convert, api.convert):
        _refused(chain, InvalidArgumentError, match, fn, str(chain / 'top.qcow2'), str(chain / dest))


@pytest.mark.parametrize('backing,fmt,match', [
    ('base.qcow2', 'raw', 'Backing format mismatch: .*base.qcow2 is a qcow2 image'),
    ('plain.raw', 'qcow2', 'Backing format mismatch: .*plain.raw is not a qcow2 image'),
])
def test_convert_keeping_a_backing_file_of_the_wrong_format(chain, backing, fmt, match):
    for fn in (api.plan_convert, api.convert):
        _refused(chain, BackingChainError, match, fn, str(chain / 'top.qcow2'), str(chain / 'flat.qcow2'),
                 backing_file=backing, backing_format=fmt)
