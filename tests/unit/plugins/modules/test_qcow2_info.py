# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.backing_name import set_backing
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_info
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import MIB, fingerprint, make_image
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_failed, run_ok


def test_chain_top_first_with_qemu_keys(tmp_path):
    base = make_image(tmp_path / "base.qcow2", size=2 * MIB)
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    api.create_snapshot(top, "s1")
    before = fingerprint(tmp_path)
    result = run_ok(qcow2_info, {"path": top})
    assert fingerprint(tmp_path) == before
    assert result["changed"] is False
    assert result["chain_depth"] == 2
    assert [image["filename"] for image in result["chain"]] == [top, base]
    image = result["image"]
    assert image == result["chain"][0]
    assert image["virtual_size"] == 2 * MIB
    assert image["backing_filename"] == "base.qcow2"
    assert image["full_backing_filename"] == base
    assert image["backing_filename_format"] == "qcow2"
    assert image["snapshots"][0]["name"] == "s1" and "vm_state_size" in image["snapshots"][0]
    assert image["format_specific"]["data"]["refcount_bits"] == 16
    assert not any("-" in key for key in image)


def test_values_are_the_engines_qemu_info(tmp_path):
    top = make_image(tmp_path / "top.qcow2")
    expected = api.image_info(top, force_share=True)[0]
    image = run_ok(qcow2_info, {"path": top})["image"]
    assert image["actual_size"] == expected["actual-size"]
    assert image["format_specific"]["data"]["compression_type"] == expected["format-specific"]["data"]["compression-type"]


def test_backing_chain_false_reads_only_the_image(tmp_path):
    make_image(tmp_path / "gone.qcow2", size=MIB)
    top = make_image(tmp_path / "top.qcow2", backing="gone.qcow2")
    os.unlink(str(tmp_path / "gone.qcow2"))
    result = run_ok(qcow2_info, {"path": top, "backing_chain": False})
    assert result["image"]["backing_filename"] == "gone.qcow2"
    assert "chain" not in result and "chain_depth" not in result
    assert "No such file" in run_failed(qcow2_info, {"path": top})["msg"]


def test_check(tmp_path):
    top = make_image(tmp_path / "top.qcow2")
    check = run_ok(qcow2_info, {"path": top, "check": True})["check"]
    assert check["exit_code"] == 0 and check["check_errors"] == 0 and check["messages"] == []
    assert check["filename"] == top
    assert "check" not in run_ok(qcow2_info, {"path": top})


def test_reads_a_locked_image_unless_force_share_is_off(tmp_path):
    top = make_image(tmp_path / "top.qcow2")
    with api.open_chain(top, fmt="qcow2", writable=True):
        assert run_ok(qcow2_info, {"path": top})["image"]["filename"] == top
        assert "lock" in run_failed(qcow2_info, {"path": top, "force_share": False})["msg"]


def test_errors(tmp_path):
    (tmp_path / "plain.txt").write_text("hello")
    make_image(tmp_path / "b.qcow2", size=MIB)
    loop_a = make_image(tmp_path / "a.qcow2", backing="b.qcow2")
    # the engine's rebase refuses to write a loop, so write the header of one directly
    with api.open_chain(str(tmp_path / "b.qcow2"), fmt="qcow2", writable=True, backing=False) as chain:
        set_backing(chain.top, "a.qcow2", "qcow2")
    assert "No such file" in run_failed(qcow2_info, {"path": str(tmp_path / "none.qcow2")})["msg"]
    assert "not a qcow2 image" in run_failed(qcow2_info, {"path": str(tmp_path / "plain.txt")})["msg"]
    # the format found is a field a playbook tests (a raw file is not an error of the same kind as a missing one)
    assert run_failed(qcow2_info, {"path": str(tmp_path / "plain.txt")})["image_format"] == "raw"
    assert "image_format" not in run_failed(qcow2_info, {"path": str(tmp_path / "none.qcow2")})
    assert "infinite loop" in run_failed(qcow2_info, {"path": loop_a})["msg"]
    assert "outside the allowed directories" in run_failed(
        qcow2_info, {"path": loop_a, "allowed_backing_dirs": ["/nonexistent"]})["msg"]
