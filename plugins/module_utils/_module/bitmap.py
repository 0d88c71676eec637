# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_bitmap: one persistent dirty bitmap of a qcow2 image brought to a state (present, cleared, absent;
enabled or not; other bitmaps merged in), with qemu-img bitmap's operations done by the engine.

The engine's plan (api.plan_bitmap) decides changed, the diff and the operations; apply runs the engine's
change, which plans again under the image's write lock and must find the same operations.
"""

from __future__ import annotations

import typing

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import parse_size
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class BitmapOperation(Operation):
    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(module)
        self.name: str = self.params["name"]
        self.state: str = self.params["state"]
        self.granularity = parse_size(self.params["granularity"], "granularity")
        self.enabled: bool | None = self.params["enabled"]
        self.merge_from = [dict(item) for item in self.params["merge_from"] or ()]
        self.actions: list[str] = []
        self.bitmap: dict | None = None

    def _call(self, function: typing.Callable[..., typing.Any]) -> typing.Any:
        return function(self.path, self.name, state=self.state, granularity=self.granularity, enabled=self.enabled,
                        merge_from=self.merge_from, policy=self.policy)

    def plan(self) -> None:
        api.require_qcow2(self.path)  # a raw file fails with image_format, as in the other modules
        plan = self._call(api.plan_bitmap)
        self.changed = plan.changed
        self.actions = plan.actions
        self.bitmap = plan.after
        self.diff_before = {"path": self.path, "bitmap": plan.before}
        self.diff_after = {"path": self.path, "bitmap": plan.after}

    def apply(self) -> None:
        result = self._call(api.bitmap)
        if result.actions != self.actions:  # the image changed between plan and apply
            raise api.Qcow2Error("%s changed while the task ran: it planned %s, then had to do %s"
                                 % (self.path, ", ".join(self.actions) or "nothing", ", ".join(result.actions) or
                                    "nothing"), self.path)
        self.bitmap = result.after
        self.diff_after = {"path": self.path, "bitmap": result.after}

    def results(self) -> dict:
        result: dict = {"actions": self.actions}
        if self.bitmap is not None:
            result["bitmap"] = self.bitmap
        return result
