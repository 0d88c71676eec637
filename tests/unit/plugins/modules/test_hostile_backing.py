# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every module refuses hostile backing references, in check mode too, and touches nothing.

Images whose header names a json: or protocol backing file, an external data file, a backing
file outside allowed_backing_dirs (also through a symlink), or a loop.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import Qcow2Image
from ansible_collections.backingchain.qcow2.plugins.modules import (
    qcow2_commit,
    qcow2_image,
    qcow2_info,
    qcow2_rebase,
    qcow2_snapshot,
)
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import fingerprint, make_image
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_failed, run_ok


def _set_header(path, backing=None, data_file=None):
    """Rewrite the header as any tool might have left it (no checks)."""
    with Qcow2Image(str(path), writable=True) as img:
        if backing is not None:
            img.header.backing_file = backing
            img.header.backing_format = "qcow2"
        if data_file is not None:
            img.header.incompatible_features |= C.INCOMPAT_DATA_FILE
            img.header.data_file = data_file
        img.rewrite_header()


def _every_module(top):
    """(module, arguments) of a task of each module that has to open top's chain."""
    return [
        (qcow2_info, {"path": top}),
        (qcow2_image, {"path": top, "size": "8M"}),
        (qcow2_image, {"path": os.path.join(os.path.dirname(top), "copy.qcow2"), "source": top}),
        (qcow2_snapshot, {"path": top, "name": "s1"}),
        (qcow2_commit, {"path": top}),
        (qcow2_rebase, {"path": top, "backing_file": ""}),
    ]


def _all_refuse(tmp_path, top, message, **extra):
    before = fingerprint(tmp_path)
    for module, args in _every_module(top):
        for check_mode in (True, False):
            result = run_failed(module, dict(args, **extra), check_mode=check_mode)
            assert message in result["msg"], (module.__name__, check_mode, result["msg"])
    assert fingerprint(tmp_path) == before  # nothing written, nothing created


@pytest.mark.parametrize("name, message", [
    ('json:{"file.driver":"file","file.filename":"/etc/shadow"}', "json:"),
    ("nbd:evil.example.org:10809", "protocol"),
    ("http://example.org/base.qcow2", "protocol"),
])
def test_json_and_protocol_backing_names(tmp_path, name, message):
    make_image(tmp_path / "base.qcow2")
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    _set_header(top, backing=name)
    _all_refuse(tmp_path, top, message)


def test_external_data_file_unless_allowed(tmp_path):
    top = make_image(tmp_path / "top.qcow2")
    with open(tmp_path / "data.raw", "wb") as f:
        f.truncate(4 << 20)
    _set_header(top, data_file="data.raw")
    _all_refuse(tmp_path, top, "external data file")
    # allowed explicitly, the image is read; writing it is still refused
    assert run_ok(qcow2_info, {"path": top, "allow_data_file": True})["image"]["virtual_size"] == 4 << 20
    before = fingerprint(tmp_path)
    result = run_failed(qcow2_snapshot, {"path": top, "name": "s1", "allow_data_file": True})
    assert "data file" in result["msg"], result["msg"]
    assert fingerprint(tmp_path) == before


def test_backing_file_outside_the_allowed_directories(tmp_path):
    outside = tmp_path / "outside"
    inside = tmp_path / "inside"
    outside.mkdir()
    inside.mkdir()
    make_image(outside / "base.qcow2")
    os.symlink(str(outside / "base.qcow2"), str(inside / "link.qcow2"))  # a symlink does not make it inside
    top = make_image(inside / "top.qcow2", backing="link.qcow2")
    _all_refuse(tmp_path, top, "outside the allowed directories", allowed_backing_dirs=[str(inside)])


def test_backing_loop(tmp_path):
    make_image(tmp_path / "a.qcow2")
    top = make_image(tmp_path / "b.qcow2", backing="a.qcow2")
    _set_header(tmp_path / "a.qcow2", backing="b.qcow2")
    _all_refuse(tmp_path, top, "infinite loop")
