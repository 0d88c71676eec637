# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import errno

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._live import libvirt_dep
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._module import engine
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import deps
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import (
    ImageLockedError,
    MissingDependencyError,
    NoSpaceError,
)


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self):
        self.failure = None

    def fail_json(self, **kwargs):
        self.failure = kwargs
        raise Failed()


@pytest.mark.parametrize("error, message", [
    (ImageLockedError('Failed to get "write" lock\nIs another process using the image [/i/a]?'), 'Failed to get "write" lock'),
    (NoSpaceError("Not enough space for x"), "Not enough space for x"),
    (OSError(errno.EACCES, "Permission denied", "/i/a.qcow2"), "/i/a.qcow2: Permission denied"),
])
def test_errors_become_fail_json_messages(error, message):
    module = FakeModule()
    with pytest.raises(Failed):
        with engine.engine_errors(module):
            raise error
    assert message in module.failure["msg"]
    assert set(module.failure) == {"msg"}


def test_missing_library_uses_missing_required_lib():
    module = FakeModule()
    with pytest.raises(Failed):
        with engine.engine_errors(module):
            raise MissingDependencyError("zstd needed", library="zstandard", import_error="Traceback ...")
    assert "zstandard" in module.failure["msg"] and "Failed to import" in module.failure["msg"]
    assert module.failure["exception"] == "Traceback ..."


def test_missing_construct_fails_before_any_engine_call(monkeypatch):
    module = FakeModule()
    monkeypatch.setattr(deps, "HAS_CONSTRUCT", False)
    monkeypatch.setattr(deps, "CONSTRUCT_IMPORT_ERROR", "ImportError: construct")
    with pytest.raises(Failed):
        engine.require_engine(module)
    assert "construct" in module.failure["msg"]


def test_chain_policy_from_options(tmp_path):
    policy = engine.chain_policy({"allowed_backing_dirs": [str(tmp_path)], "allow_data_file": True})
    assert policy.allowed_backing_dirs == [str(tmp_path.resolve())] and policy.allow_data_file is True
    policy = engine.chain_policy({"allowed_backing_dirs": [], "allow_data_file": False})
    assert policy.allowed_backing_dirs is None and policy.allow_data_file is False


def test_a_missing_libvirt_is_reported_like_any_missing_library(monkeypatch):
    """The live layer's require_libvirt() and the engine's MissingDependencyError end in the same failure."""
    monkeypatch.setattr(libvirt_dep, "libvirt", None)
    monkeypatch.setattr(libvirt_dep, "LIBVIRT_IMPORT_ERROR", "ImportError: No module named 'libvirt'")
    with pytest.raises(LiveError) as raised:
        libvirt_dep.require_libvirt()
    assert raised.value.details == {"library": "libvirt-python", "import_error": "ImportError: No module named 'libvirt'"}
    assert engine.missing_library(raised.value) == ("libvirt-python", "ImportError: No module named 'libvirt'")
    module = FakeModule()
    with pytest.raises(Failed):
        with engine.engine_errors(module):
            libvirt_dep.require_libvirt()
    assert "libvirt-python" in module.failure["msg"] and "Failed to import" in module.failure["msg"]
    assert module.failure["exception"] == "ImportError: No module named 'libvirt'"


def test_other_live_errors_keep_their_message_and_job():
    assert engine.missing_library(LiveError("domain 'x' is not running", domain="x")) is None
    module = FakeModule()
    with pytest.raises(Failed):
        with engine.engine_errors(module):
            raise LiveError("the job failed", job={"outcome": "failed"}, domain="x")
    assert module.failure == {"msg": "the job failed", "job": {"outcome": "failed"}}
