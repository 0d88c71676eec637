# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_backup, qcow2_backup_restore and qcow2_backup_verify: the backup store (module_utils/_backup) from a task.

A backup is an action, not a state: every run of qcow2_backup takes one point (changed), and check mode predicts
its level, why, and the bytes it copies. A restore is a state: the destination exists (changed only when it
is written). A verify only reads images (never changed); it records its verdict in the manifest, except in
check mode, and fails the task when it finds a problem.
"""

from __future__ import annotations

import os
import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup, restore, verify
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import (
    all_points,
    find_point,
    loaded,
    typed_points,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import ArgumentSpec, policy_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.engine import (
    chain_policy,
    engine_errors,
    require_engine,
)


def store_argument_spec(**options: dict) -> ArgumentSpec:
    """store, the chain policy (every module of the action group accepts it), and options."""
    return policy_argument_spec().update(dict(store=dict(type="path", required=True), **options))


def _run(module: AnsibleModule, work: t.Callable[[dict], dict]) -> None:
    require_engine(module)
    with engine_errors(module):
        result = work(module.params)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


# ---- qcow2_backup ----
def run_backup_module(module: AnsibleModule) -> None:
    def work(params: dict) -> dict:
        request = backup.Request(params["store"], params["path"], params["level"], params["max_chain_length"],
                                 params["keep"], params["keep_days"], params["compress"])
        policy = chain_policy(params)
        if params["domain"]:
            return _domain_backup(module, request, policy)
        if module.check_mode:
            return _planned(backup.plan_backup(request, policy))
        return _done(params["store"], backup.run_backup(request, policy))
    _run(module, work)


def _planned(plan: backup.BackupPlan, **extra: t.Any) -> dict:
    return dict({"changed": True, "level": plan.level, "reason": plan.reason, "seq": plan.seq,
                 "bytes_to_copy": plan.bytes_to_copy, "retention": [step._asdict() for step in plan.retention]}, **extra)


def _done(store: str, done: dict, **extra: t.Any) -> dict:
    manifest = loaded(store)
    chain, _point = find_point(manifest, done["point"]["seq"])
    return dict({"changed": True, "level": done["level"], "reason": done["reason"], "seq": done["point"]["seq"],
                 "bytes_to_copy": done["point"]["bytes_copied"], "point": done["point"],
                 "layer": os.path.join(store, chain["dir"], done["point"]["file"]),
                 "retention": done["retention"], "recovered": done["recovered"],
                 "bitmaps_removed": done["bitmaps_removed"], "points": typed_points(all_points(manifest))}, **extra)


def _domain_backup(module: AnsibleModule, request: backup.Request, policy: t.Any) -> dict:
    """A disk of a libvirt domain: imported only here, so that runs on image files never load libvirt."""
    from ansible_collections.backingchain.qcow2.plugins.module_utils._live import domain_backup
    from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import (
        connect,
        domain_state_name,
        lookup_domain,
    )
    params = module.params
    dom = lookup_domain(connect(params["uri"]), params["domain"])
    target, image = domain_backup.backup_disk(dom, params["disk"], params["path"])
    request = request._replace(source=image)
    described = {"name": dom.name(), "state": domain_state_name(dom), "disk": target, "image": image}
    if module.check_mode:
        return _planned(domain_backup.plan_domain_backup(dom, target, request, policy), domain=described)
    done = domain_backup.run_domain_backup(dom, target, request, policy)
    return _done(params["store"], done, domain=dict(described, checkpoints=done.get("checkpoints")))


# ---- qcow2_backup_restore ----
def run_restore_module(module: AnsibleModule) -> None:
    def work(params: dict) -> dict:
        dest = params["dest"]
        _chain, point = find_point(loaded(params["store"]), params["point"])
        if os.path.exists(dest) and not params["force"]:
            return {"changed": False, "dest": dest, "point": point,
                    "msg": "%s exists; set force to write it again from the store" % dest}
        if module.check_mode:
            return {"changed": True, "dest": dest, "point": point}
        done = restore.restore(params["store"], dest, params["point"], params["mode"], params["format"],
                               chain_policy(params))
        return {"changed": True, "dest": dest, "point": done["point"], "bytes_written": done["bytes_written"]}
    if module.params["mode"] == "instant" and module.params["force"]:
        module.fail_json(msg="force cannot replace an instant restore's overlay: it may hold the restored VM's writes; "
                             "delete it first")
    _run(module, work)


# ---- qcow2_backup_verify ----
def run_verify_module(module: AnsibleModule) -> None:
    def work(params: dict) -> dict:
        report = verify.verify(params["store"], params["level"], params["source"], chain_policy(params),
                               record=not module.check_mode, point=params["point"])
        result = dict(report, changed=False)
        if not report["ok"] and params["fail_on_problems"]:
            result.update(failed=True, msg="The backup store %s failed its %s verify: %s"
                          % (params["store"], params["level"], "; ".join(report["problems"])))
        return result
    _run(module, work)
