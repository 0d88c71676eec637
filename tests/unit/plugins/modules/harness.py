# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() in-process with arguments, and collect what it exits or fails with."""

from __future__ import annotations

import contextlib
import json
from unittest import mock

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19 and later
except ImportError:  # 2.17, 2.18: AnsibleModule reads its arguments from basic._ANSIBLE_ARGS
    @contextlib.contextmanager
    def patch_module_args(args):
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()):
            yield

from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import fingerprint


class _Exit(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


def _exit_json(self, **kwargs):  # pylint: disable=unused-argument
    kwargs.setdefault("changed", False)
    raise _Exit(kwargs)


def _fail_json(self, msg, **kwargs):  # pylint: disable=unused-argument
    kwargs.update(failed=True, msg=msg)
    raise _Exit(kwargs)


def run_module(module, args, check_mode=False, diff=False):
    """The module's result dict; failures come back with failed=True and msg, like Ansible shows them."""
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    with patch_module_args(args):
        with mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json):
            with mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
                try:
                    module.main()
                except _Exit as done:
                    return done.result
    raise AssertionError("%s.main() returned without exit_json or fail_json" % module.__name__)


def run_ok(module, args, **kwargs):
    result = run_module(module, args, **kwargs)
    assert not result.get("failed"), result.get("msg")
    return result


def run_failed(module, args, **kwargs):
    result = run_module(module, args, **kwargs)
    assert result.get("failed"), result
    assert "Traceback" not in result["msg"]
    return result


def converge(module, args, directory):
    """crypto's pattern: check mode, real run, check mode again, real run again.

    Asserts that the first check run predicts the change the real run makes, that check mode touches no
    file under directory, and that the second pair reports and touches nothing. Returns the four results.
    """
    before = fingerprint(directory)
    check1 = run_ok(module, args, check_mode=True)
    assert fingerprint(directory) == before, "check mode changed files"
    real1 = run_ok(module, args)
    assert check1["changed"] is True and real1["changed"] is True
    after = fingerprint(directory)
    check2 = run_ok(module, args, check_mode=True)
    real2 = run_ok(module, args)
    assert fingerprint(directory) == after, "the second run touched files"
    assert check2["changed"] is False and real2["changed"] is False
    return check1, real1, check2, real2
