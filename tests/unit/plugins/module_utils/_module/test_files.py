# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import (
    backing_is,
    locked,
    refuse_if_locked,
    require_parent_directory,
    same_file,
    temp_path_beside,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import ImageLockedError, InvalidArgumentError
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import make_image


def test_same_file_follows_links_and_spellings(tmp_path):
    target = tmp_path / "a.qcow2"
    target.write_bytes(b"x")
    os.symlink("a.qcow2", str(tmp_path / "link.qcow2"))
    assert same_file(str(target), str(tmp_path / "link.qcow2"))
    assert same_file(str(target), str(tmp_path / "." / "a.qcow2"))
    assert not same_file(str(target), str(tmp_path / "missing"))
    assert not same_file(str(tmp_path / "missing"), str(tmp_path / "missing"))


def test_backing_is_resolves_relative_names_against_the_image(tmp_path):
    (tmp_path / "base.qcow2").write_bytes(b"x")
    image = str(tmp_path / "top.qcow2")
    assert backing_is(image, "base.qcow2", "base.qcow2")
    assert backing_is(image, "base.qcow2", str(tmp_path / "base.qcow2"))
    assert not backing_is(image, "base.qcow2", "other.qcow2")
    assert not backing_is(image, None, "base.qcow2")


def test_temp_path_is_hidden_fresh_and_beside(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    first, second = temp_path_beside(path), temp_path_beside(path)
    assert first != second
    assert os.path.dirname(first) == str(tmp_path)
    assert os.path.basename(first).startswith(".disk.qcow2.") and first.endswith(".tmp")


def test_require_parent_directory(tmp_path):
    require_parent_directory(str(tmp_path / "disk.qcow2"))
    with pytest.raises(InvalidArgumentError) as err:
        require_parent_directory(str(tmp_path / "missing" / "disk.qcow2"))
    assert "directory %s does not exist" % (tmp_path / "missing") in str(err.value)


def test_locks_conflict_as_qemus_do(tmp_path):
    path = make_image(tmp_path / "disk.qcow2")
    refuse_if_locked(path)
    with locked(path, write=False):
        refuse_if_locked(path, write=False)  # readers share
        with pytest.raises(ImageLockedError) as err:
            refuse_if_locked(path)
        assert "Is another process using the image" in str(err.value)
    with locked(path):
        with pytest.raises(ImageLockedError):
            refuse_if_locked(path, write=False)
    refuse_if_locked(path)
