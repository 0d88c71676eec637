# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import (
    backing_is,
    require_parent_directory,
    temp_path_beside,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


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
