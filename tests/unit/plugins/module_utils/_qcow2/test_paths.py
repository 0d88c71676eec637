# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one same_file and the one chain-position helper every layer uses, on their edge cases."""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.paths import (
    file_identity,
    position_of,
    remove_stale_temporaries,
    same_file,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.locking import held
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import make_image


def test_same_file_follows_links_and_spellings(tmp_path):
    target = tmp_path / "a.qcow2"
    target.write_bytes(b"x")
    os.symlink("a.qcow2", str(tmp_path / "link.qcow2"))
    assert same_file(str(target), str(tmp_path / "link.qcow2"))
    assert same_file(str(target), str(tmp_path / "." / "a.qcow2"))
    assert not same_file(str(target), str(tmp_path / "missing"))
    assert not same_file(str(tmp_path / "missing"), str(tmp_path / "missing"))


def test_same_inode_under_two_names_is_the_same_file(tmp_path):
    (tmp_path / "a.qcow2").write_bytes(b"x")
    os.link(str(tmp_path / "a.qcow2"), str(tmp_path / "hard.qcow2"))
    (tmp_path / "copy.qcow2").write_bytes(b"x")  # same content, another file
    assert same_file(str(tmp_path / "a.qcow2"), str(tmp_path / "hard.qcow2"))
    assert not same_file(str(tmp_path / "a.qcow2"), str(tmp_path / "copy.qcow2"))


def test_a_path_that_names_no_file_is_the_same_as_nothing(tmp_path):
    os.symlink("gone.qcow2", str(tmp_path / "dangling.qcow2"))
    (tmp_path / "a.qcow2").write_bytes(b"x")
    assert not same_file(str(tmp_path / "dangling.qcow2"), str(tmp_path / "dangling.qcow2"))
    assert not same_file(str(tmp_path / "dangling.qcow2"), str(tmp_path / "gone.qcow2"))
    assert not same_file(str(tmp_path / "a.qcow2" / "below"), str(tmp_path / "a.qcow2" / "below"))  # not a directory
    assert not same_file("", "") and not same_file(None, str(tmp_path / "a.qcow2"))
    assert file_identity(str(tmp_path / "dangling.qcow2")) is None
    assert file_identity(str(tmp_path / "a.qcow2")) is not None
    assert file_identity(str(tmp_path / "a.qcow2")) == file_identity(str(tmp_path / "." / "a.qcow2"))


def test_position_of_is_the_first_image_naming_the_file(tmp_path):
    for name in ("top.qcow2", "mid.qcow2", "base.qcow2"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink("mid.qcow2", str(tmp_path / "link.qcow2"))
    chain = [str(tmp_path / name) for name in ("top.qcow2", "mid.qcow2", "base.qcow2")]
    assert position_of(chain, str(tmp_path / "top.qcow2")) == 0
    assert position_of(chain, str(tmp_path / "link.qcow2")) == 1
    assert position_of(chain, "%s/../%s/base.qcow2" % (tmp_path, tmp_path.name)) == 2
    assert position_of(chain, str(tmp_path / "missing.qcow2")) is None
    assert position_of(chain + [str(tmp_path / "link.qcow2")], str(tmp_path / "mid.qcow2")) == 1
    assert position_of([None, str(tmp_path / "missing.qcow2")], str(tmp_path / "missing.qcow2")) is None
    assert position_of([], str(tmp_path / "top.qcow2")) is None


def test_stale_temporaries_go_unless_held_or_not_ours(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    stale = [tmp_path / ".disk.qcow2.abcd.tmp", tmp_path / "..disk.qcow2.abcd.tmp.x1y2.tmp"]
    kept = [tmp_path / ".other.qcow2.abcd.tmp", tmp_path / ".disk.qcow2.abcd.part", tmp_path / "disk.qcow2.tmp"]
    for name in stale + kept:
        name.write_bytes(b"x")
    held_one = make_image(tmp_path / ".disk.qcow2.held.tmp")
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / ".disk.qcow2.link.tmp"))
    (tmp_path / "elsewhere").write_bytes(b"x")
    with held(held_one):
        remove_stale_temporaries(path)
    assert not any(name.exists() for name in stale)
    assert all(name.exists() for name in kept)
    assert os.path.exists(held_one) and os.path.lexists(str(tmp_path / ".disk.qcow2.link.tmp"))
