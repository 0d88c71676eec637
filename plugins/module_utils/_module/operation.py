# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The shape every module shares: plan (read only, decides changed and the diff), apply (writes), result.

Check mode runs plan alone, so whatever plan predicts is what the real run then does: a difference
between the two can only come from apply, which must do exactly what plan decided. The engine's plan
(api.plan_*) is what plan shows; apply hands it back to the engine instead of planning again.
"""

from __future__ import annotations

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.engine import (
    chain_policy,
    engine_errors,
    naming_lock_holders,
    require_engine,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class Operation:
    """One module run. Subclasses fill plan(), apply() and extra results."""

    def __init__(self, module: AnsibleModule, policy: api.ChainPolicy | None = None) -> None:
        self.module = module
        self.params = module.params
        self.path: str = module.params["path"]
        self.policy = policy or chain_policy(module.params)
        self.check_mode: bool = module.check_mode
        self.changed = False
        self.diff_before: dict = {}
        self.diff_after: dict = {}

    def plan(self) -> None:
        """Read the current state, decide self.changed and the diff; raise Qcow2Error on what cannot be done."""
        raise NotImplementedError

    def apply(self) -> None:
        """Make the planned change. Called only when plan() decided changed and not in check mode."""
        raise NotImplementedError

    def results(self) -> dict:
        """Module-specific return values."""
        return {}

    def finish(self) -> None:
        """Called after apply (or instead of it); may add changes that need the final file (attributes)."""

    def dump(self) -> dict:
        result = dict(changed=self.changed)
        result.update(self.results())
        if self.module._diff:
            result["diff"] = dict(before=self.diff_before, after=self.diff_after)
        return result


OperationFactory = t.Callable[[AnsibleModule], Operation]


def run_operation(module: AnsibleModule, operation_class: OperationFactory) -> None:
    """Plan, apply unless check mode, exit; every engine error ends in fail_json.

    operation_class may be a function of the module choosing the class (offline, live, shut-off domain).
    """
    require_engine(module)
    with engine_errors(module), naming_lock_holders(module.params):
        operation = operation_class(module)
        operation.plan()
        if operation.changed and not operation.check_mode:
            operation.apply()
        operation.finish()
        result = operation.dump()
    module.exit_json(**result)


def operation_for(module: AnsibleModule, offline: t.Callable[..., t.Any],
                  domain_variants: t.Callable[[], tuple[t.Callable[..., t.Any], t.Callable[..., t.Any]]],
                  *args: t.Any) -> t.Any:
    """Which operation does the task: offline(module, *args) without ``domain``; with it, live(module, *args, domain)
    while qemu runs the domain, else shut_off(module, *args, domain) (the engine plus the domain's definition), where
    (live, shut_off) = domain_variants().

    domain_variants imports the domain variants, and this imports Domain, only here: a run without ``domain`` imports
    nothing of libvirt and the live layer (they cost a module run start-up time)."""
    if not module.params.get("domain"):
        return offline(module, *args)
    from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain import Domain
    live, shut_off = domain_variants()
    domain = Domain(module.params, chain_policy(module.params))
    return (live if domain.running else shut_off)(module, *args, domain)
