"""Opening backing chains the way qemu resolves them, and refusing what would be unsafe."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import create_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import ChainPolicy, has_protocol, open_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import (
    BackingChainError, UnsafeBackingError, UnsupportedError)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import Qcow2Image
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.raw import RawImage

MiB = 1 << 20


def qcow2(path, backing=None, backing_format='qcow2', size=MiB):
    create_image(str(path), CreateOptions(size=None if backing else size, backing_file=backing,
                                          backing_format=backing_format if backing else None))
    return str(path)


def raw(path, data=b'', size=MiB):
    with open(path, 'wb') as f:
        f.write(data)
        f.truncate(size)
    return str(path)


def set_backing(path, name, fmt='qcow2'):
    """Rewrite an image's backing reference as any tool might have left it (no checks)."""
    with Qcow2Image(str(path), writable=True) as img:
        img.header.backing_file = name
        img.header.backing_format = fmt
        img.rewrite_header()


def chain_paths(path, **kwargs):
    with open_chain(str(path), **kwargs) as chain:
        return [img.path for img in chain]


# ---- names qemu would interpret as something other than a plain file ----

@pytest.mark.parametrize('name', [
    'json:{"file.driver":"file","file.filename":"/etc/shadow"}',
    'json:{"driver":"nbd","server":{"type":"inet","host":"evil","port":"10809"}}',
])
def test_json_pseudo_protocol_is_refused(tmp_path, name):
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, name)
    with pytest.raises(UnsafeBackingError, match='json:'):
        open_chain(top)


@pytest.mark.parametrize('name', ['nbd:localhost:10809', 'file:base.qcow2', 'http://example.org/base.qcow2',
                                  'ssh:host:/img', 'top:image.qcow2'])
def test_protocol_names_are_refused(tmp_path, name):
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, name)
    with pytest.raises(UnsafeBackingError, match='protocol'):
        open_chain(top)


@pytest.mark.parametrize('name, protocol', [('nbd:x', True), ('./a:b', False), ('dir/with:colon', False),
                                            ('/abs:olute', False), ('plain', False), (':', True)])
def test_has_protocol_is_qemus_path_has_protocol(name, protocol):
    assert has_protocol(name) == protocol


def test_a_colon_after_a_slash_is_a_plain_file(tmp_path):
    os.mkdir(tmp_path / 'dir')
    qcow2(tmp_path / 'dir' / 'b:ase.qcow2')
    top = qcow2(tmp_path / 'top.qcow2', backing='./dir/b:ase.qcow2')
    assert os.path.normpath(chain_paths(top)[1]) == str(tmp_path / 'dir' / 'b:ase.qcow2')


def test_relative_names_are_relative_to_the_overlay_not_the_cwd(tmp_path, monkeypatch):
    os.mkdir(tmp_path / 'images')
    qcow2(tmp_path / 'images' / 'base.qcow2')
    top = qcow2(tmp_path / 'images' / 'top.qcow2', backing='base.qcow2')
    monkeypatch.chdir(tmp_path)
    assert chain_paths(top) == [top, str(tmp_path / 'images' / 'base.qcow2')]


# ---- allowed directories ----

@pytest.fixture
def dirs(tmp_path):
    for d in ('allowed', 'allowed2', 'outside'):
        os.mkdir(tmp_path / d)
    return tmp_path


def policy(*allowed):
    return ChainPolicy(allowed_backing_dirs=[str(d) for d in allowed])


def test_backing_inside_an_allowed_dir(dirs):
    qcow2(dirs / 'allowed' / 'base.qcow2')
    top = qcow2(dirs / 'top.qcow2', backing='allowed/base.qcow2')
    assert len(chain_paths(top, policy=policy(dirs / 'allowed'))) == 2


def test_backing_outside_the_allowed_dirs(dirs):
    qcow2(dirs / 'outside' / 'base.qcow2')
    top = qcow2(dirs / 'top.qcow2', backing='outside/base.qcow2')
    with pytest.raises(UnsafeBackingError, match='outside the allowed directories'):
        open_chain(top, policy=policy(dirs / 'allowed'))


def test_dot_dot_out_of_an_allowed_dir(dirs):
    qcow2(dirs / 'outside' / 'base.qcow2')
    top = qcow2(dirs / 'top.qcow2', backing='allowed/../outside/base.qcow2')
    with pytest.raises(UnsafeBackingError):
        open_chain(top, policy=policy(dirs / 'allowed'))


def test_a_sibling_sharing_the_allowed_dirs_name_prefix_is_outside(dirs):
    qcow2(dirs / 'allowed2' / 'base.qcow2')
    top = qcow2(dirs / 'top.qcow2', backing='allowed2/base.qcow2')
    with pytest.raises(UnsafeBackingError):
        open_chain(top, policy=policy(dirs / 'allowed'))


def test_a_symlink_inside_pointing_outside_is_refused(dirs):
    qcow2(dirs / 'outside' / 'base.qcow2')
    os.symlink(dirs / 'outside' / 'base.qcow2', dirs / 'allowed' / 'link.qcow2')
    top = qcow2(dirs / 'top.qcow2', backing='allowed/link.qcow2')
    with pytest.raises(UnsafeBackingError, match='resolves to .*outside'):
        open_chain(top, policy=policy(dirs / 'allowed'))


def test_an_allowed_dir_given_through_a_symlink(dirs):
    qcow2(dirs / 'allowed' / 'base.qcow2')
    os.symlink(dirs / 'allowed', dirs / 'alias')
    top = qcow2(dirs / 'top.qcow2', backing='alias/base.qcow2')
    assert len(chain_paths(top, policy=policy(dirs / 'alias'))) == 2


def test_every_level_of_the_chain_is_checked(dirs):
    qcow2(dirs / 'outside' / 'base.qcow2')
    qcow2(dirs / 'allowed' / 'mid.qcow2', backing='../outside/base.qcow2')
    top = qcow2(dirs / 'top.qcow2', backing='allowed/mid.qcow2')
    with pytest.raises(UnsafeBackingError, match='mid.qcow2'):
        open_chain(top, policy=policy(dirs / 'allowed'))


# ---- loops and depth ----

def test_self_loop(tmp_path):
    top = qcow2(tmp_path / 'a.qcow2')
    set_backing(top, 'a.qcow2')
    with pytest.raises(BackingChainError, match='creates an infinite loop'):
        open_chain(top)


def test_two_image_loop(tmp_path):
    a = qcow2(tmp_path / 'a.qcow2')
    qcow2(tmp_path / 'b.qcow2', backing='a.qcow2')
    set_backing(a, 'b.qcow2')
    with pytest.raises(BackingChainError, match="Backing file '.*a.qcow2' creates an infinite loop"):
        open_chain(a)


def test_loop_through_another_spelling_of_the_same_file(tmp_path):
    a = qcow2(tmp_path / 'a.qcow2')
    os.symlink('a.qcow2', tmp_path / 'alias.qcow2')
    qcow2(tmp_path / 'b.qcow2', backing='alias.qcow2')
    set_backing(a, './b.qcow2')
    with pytest.raises(BackingChainError, match='infinite loop'):
        open_chain(a)


def make_chain(tmp_path, depth):
    path = qcow2(tmp_path / 'img0.qcow2')
    for i in range(1, depth):
        path = qcow2(tmp_path / ('img%d.qcow2' % i), backing='img%d.qcow2' % (i - 1))
    return path


def test_depth_bound(tmp_path):
    top = make_chain(tmp_path, 6)
    assert len(chain_paths(top, policy=ChainPolicy(max_depth=6))) == 6
    with pytest.raises(BackingChainError, match='deeper than 5 images'):
        open_chain(top, policy=ChainPolicy(max_depth=5))


def test_backing_false_opens_the_top_only(tmp_path):
    top = make_chain(tmp_path, 3)
    assert chain_paths(top, backing=False) == [top]


# ---- formats: never probe into qcow2, never probe a declared raw ----

def test_no_recorded_format_and_qcow2_content_is_refused(tmp_path):
    qcow2(tmp_path / 'base.qcow2')
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, 'base.qcow2', fmt=None)
    with pytest.raises(UnsafeBackingError, match='no recorded format and looks like qcow2'):
        open_chain(top)


def test_no_recorded_format_and_raw_content_is_raw(tmp_path):
    raw(tmp_path / 'base.img', b'plain data')
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, 'base.img', fmt=None)
    with open_chain(top) as chain:
        assert isinstance(chain.images[1], RawImage)
        assert chain.top.read(0, 10) == b'plain data'


def test_a_declared_raw_backing_is_read_as_bytes_even_if_it_looks_like_qcow2(tmp_path):
    """A guest can write a qcow2 header into its raw disk; qemu must not follow it (CVE-2010-2238 era)."""
    guest_made = qcow2(tmp_path / 'guest-made.qcow2')
    with open(guest_made, 'rb') as f:
        first = f.read(512)
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, 'guest-made.qcow2', fmt='raw')
    with open_chain(top) as chain:
        assert isinstance(chain.images[1], RawImage)
        assert chain.top.read(0, 512) == first
        assert chain.images[1].backing_filename is None


def test_declared_qcow2_backing_that_is_not_qcow2(tmp_path):
    raw(tmp_path / 'base.img')
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, 'base.img', fmt='qcow2')
    with pytest.raises(BackingChainError, match='not a valid qcow2 image'):
        open_chain(top)


def test_unsupported_backing_format(tmp_path):
    raw(tmp_path / 'base.vmdk')
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, 'base.vmdk', fmt='vmdk')
    with pytest.raises(UnsupportedError, match="format 'vmdk'"):
        open_chain(top)


def test_missing_backing_file(tmp_path):
    top = qcow2(tmp_path / 'top.qcow2')
    set_backing(top, 'gone.qcow2')
    with pytest.raises(BackingChainError, match="Could not open backing file '.*gone.qcow2'.*No such file"):
        open_chain(top)


def test_top_format_is_detected_and_never_guessed_from_the_name(tmp_path):
    plain = raw(tmp_path / 'disk.qcow2', b'not an image')
    with open_chain(plain) as chain:
        assert isinstance(chain.top, RawImage)


# ---- external data files ----

def with_data_file(tmp_path, name):
    top = qcow2(tmp_path / 'top.qcow2')
    raw(tmp_path / 'data.raw', b'external', size=MiB)
    with Qcow2Image(top, writable=True) as img:
        img.header.incompatible_features |= C.INCOMPAT_DATA_FILE
        img.header.data_file = name
        img.rewrite_header()
    return top


def test_external_data_file_is_refused_by_default(tmp_path):
    top = with_data_file(tmp_path, 'data.raw')
    with pytest.raises(UnsafeBackingError, match='external data file'):
        open_chain(top)


def test_external_data_file_when_allowed(tmp_path):
    top = with_data_file(tmp_path, 'data.raw')
    with open_chain(top, policy=ChainPolicy(allow_data_file=True)) as chain:
        assert chain.top.data_file.path == str(tmp_path / 'data.raw')


def test_an_allowed_data_file_still_gets_the_name_checks(tmp_path):
    top = with_data_file(tmp_path, 'json:{"file.filename":"/etc/passwd"}')
    with pytest.raises(UnsafeBackingError, match='json:'):
        open_chain(top, policy=ChainPolicy(allow_data_file=True))
