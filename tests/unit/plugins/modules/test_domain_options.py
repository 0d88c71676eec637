# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The domain options where no libvirt is needed: their constraints, the missing library, and the lock
message that names the domain holding an image (tests/live runs them against a real libvirtd)."""

from __future__ import annotations

from unittest import mock

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._live import libvirt_dep
from ansible_collections.backingchain.qcow2.plugins.module_utils._module import engine
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.modules import qcow2_commit, qcow2_info, qcow2_rebase, qcow2_snapshot
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import make_image, write
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness import run_failed


@pytest.fixture
def chain(tmp_path):
    base = make_image(tmp_path / "base.qcow2", size=1 << 20)
    top = make_image(tmp_path / "top.qcow2", backing="base.qcow2")
    write(top, 0, b"\x01" * 4096)
    return base, top


def test_domain_only_options_need_domain(chain):
    _base, top = chain
    assert "domain" in run_failed(qcow2_commit, {"path": top, "disk": "vda"})["msg"]
    assert "domain" in run_failed(qcow2_rebase, {"path": top, "backing_file": "", "timeout": 5})["msg"]
    assert "domain" in run_failed(qcow2_commit, {"path": top, "bandwidth": "10M"})["msg"]
    overlay = {"path": top, "type": "external", "overlay": top + ".o"}
    assert "domain" in run_failed(qcow2_snapshot, dict(overlay, quiesce=True))["msg"]
    assert "domain" in run_failed(qcow2_snapshot, dict(overlay, metadata=True))["msg"]
    internal = run_failed(qcow2_snapshot, {"path": top, "name": "s1", "domain": "vm1"})
    assert "only used with type=external" in internal["msg"]


@pytest.mark.parametrize("module, args", [
    (qcow2_commit, {}),
    (qcow2_rebase, {"backing_file": ""}),
    (qcow2_snapshot, {"type": "external", "overlay": "/nonexistent/o.qcow2"}),
])
def test_without_libvirt_python_a_domain_task_fails_naming_the_library(chain, module, args):
    _base, top = chain
    with mock.patch.object(libvirt_dep, "libvirt", None):
        result = run_failed(module, dict(args, path=top, domain="vm1"))
    assert "libvirt-python" in result["msg"]


def test_a_lock_message_names_the_holder_unless_the_task_cannot_take_a_domain(chain):
    _base, top = chain
    holders = mock.Mock(return_value="image %s is in use by running domain 'vm1' (disk vda); pass domain: vm1" % top)
    with mock.patch.object(engine, "lock_holders", holders), api.open_chain(top, writable=True):
        for module, args in ((qcow2_commit, {}), (qcow2_rebase, {"backing_file": ""}),
                             (qcow2_snapshot, {"type": "external", "overlay": top + ".o"})):
            message = run_failed(module, dict(args, path=top))["msg"]
            assert 'Failed to get "write" lock' in message and "pass domain: vm1" in message, message
        assert holders.call_args == mock.call(top, "qemu:///system")
        internal = run_failed(qcow2_snapshot, {"path": top, "name": "s1"})["msg"]
        assert 'Failed to get "write" lock' in internal and "pass domain" not in internal
        # qcow2_info only reads: its domain option would not lift the lock
        info = run_failed(qcow2_info, {"path": top, "force_share": False})["msg"]
        assert "lock" in info and "pass domain" not in info


def test_without_libvirt_python_qemus_lock_message_stays(chain):
    _base, top = chain
    with mock.patch.object(libvirt_dep, "libvirt", None), api.open_chain(top, writable=True):
        message = run_failed(qcow2_commit, {"path": top})["msg"]
    assert message.startswith('Failed to get "write" lock') and message.endswith("Is another process using the image [%s]?" % top)
