# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only stdout callback: one JSON line per task result, with everything the module returned
(diff and warnings included), so the live tests can assert on what Ansible got from a module."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "module_result"

    def _emit(self, result, status):
        record = {"status": status, "result": result._result}
        self._display.display("MODULE_RESULT " + json.dumps(record, default=str))

    def v2_runner_on_ok(self, result):
        self._emit(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._emit(result, "unreachable")
