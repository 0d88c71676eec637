# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_info: qemu-img info [--backing-chain] and, on request, qemu-img check, plus what libvirt says about the
image (domain, users: info_domain.py, imported only for a task that asks for them); reads only.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class InfoOperation(Operation):
    """Never changes anything: plan reads, apply is never called."""

    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(module)
        self.infos: list[dict] | None = None
        self.check_report: dict | None = None
        self.domain: dict | None = None
        self.users: list[dict] | None = None

    def plan(self) -> None:
        force_share = self.params["force_share"]
        if self.path:
            api.require_qcow2(self.path)
            self.infos = api.image_info(self.path, backing_chain=self.params["backing_chain"], force_share=force_share,
                                        policy=self.policy, bitmaps=True)
        if self.params["check"]:
            report = api.check(self.path, force_share=force_share)
            self.check_report = underscore_keys(report["result"])
            self.check_report["exit_code"] = report["exit_code"]
            self.check_report["messages"] = list(report["messages"])
        if self.params["domain"] or self.params["users"]:
            from ansible_collections.backingchain.qcow2.plugins.module_utils._module.info_domain import DomainView, image_users
            view = None
            if self.params["domain"]:
                view = DomainView(self.params, self.policy)
                self.domain = view.describe(self.path, self.params["disk"])
            if self.params["users"]:
                self.users = image_users(self.params, self.policy, conn=view.domain.conn if view else None)

    def results(self) -> dict:
        result: dict = {}
        if self.infos is not None:
            result["image"] = underscore_keys(self.infos[0])
            if self.params["backing_chain"]:
                result["chain"] = underscore_keys(self.infos)
                result["chain_depth"] = len(self.infos)
        if self.check_report is not None:
            result["check"] = self.check_report
        if self.domain is not None:
            result["domain"] = self.domain
        if self.users is not None:
            result["users"] = self.users
        return result

    def dump(self) -> dict:
        # Nothing changes, so there is no diff to show.
        result = dict(changed=False)
        result.update(self.results())
        return result
