#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_backup_verify
short_description: Verify a qcow2 backup store's layers, chains and tracking
version_added: "0.1.0"
description:
  - Verifies a store that M(backingchain.qcow2.qcow2_backup) writes, and fails when it finds a problem (unless
    O(fail_on_problems=false)).
  - V(quick) checks every sealed layer, that it hashes to the sha256 sealed in the manifest (bit rot, a stray write),
    passes the collection's check (the rules of C(qemu-img check)) and names the layer below it relatively, as qcow2.
    A bad layer flags its point and every later point of its chain, which read through it.
  - V(full) also reads the chain up to O(point) end to end, every data cluster (by default the latest point of every
    chain, since reading every point would cost the disk's size once per point).
  - V(audit) also compares the source O(source) with the latest point, when the source has not changed since it
    (its tracking bitmap is empty); a difference is a write the tracking missed.
  - The verdict is recorded in the store's manifest; after a failed verify, the next
    M(backingchain.qcow2.qcow2_backup) with O(backingchain.qcow2.qcow2_backup#module:level=auto) starts a new chain
    with a full.
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
attributes:
  check_mode:
    support: full
    details:
      - Verifies all the same, and does not record the verdict.
  diff_mode:
    support: N/A
    details:
      - This module only reads images.
  idempotent:
    support: full
    details:
      - It never reports a change; it only records its verdict in the manifest.
options:
  store:
    description: The backup store.
    type: path
    required: true
  level:
    description: V(quick), V(full) or V(audit) (see above).
    type: str
    choices: [quick, full, audit]
    default: quick
  source:
    description: The image backed up into the store, for V(audit).
    type: path
  point:
    description: The point whose chain V(full) reads; not set, the latest point of every chain.
    type: int
  fail_on_problems:
    description: Fail the task when the verify finds a problem; otherwise report it in RV(problems).
    type: bool
    default: true
seealso:
  - module: backingchain.qcow2.qcow2_backup
  - module: backingchain.qcow2.qcow2_backup_restore
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Check every layer of the store
  backingchain.qcow2.qcow2_backup_verify:
    store: /backup/vm1-vda

- name: Once a week, compare the disk with its latest point
  backingchain.qcow2.qcow2_backup_verify:
    store: /backup/vm1-vda
    level: audit
    source: /var/lib/libvirt/images/vm1.qcow2
  when: ansible_facts['date_time']['weekday'] == 'Sunday'
"""

RETURN = r"""
ok:
  description: No problem found.
  returned: always
  type: bool
problems:
  description: What was found, one line per problem.
  returned: always
  type: list
  elements: str
  sample: ["point 3 (chain-0001/0003.qcow2): the layer's sha256 differs from the one sealed in the manifest"]
bad_points:
  description: The points that cannot be trusted (a bad layer and every later point of its chain).
  returned: always
  type: list
  elements: int
audited:
  description: The point an audit compared the source with; null when none was (the source changed since).
  returned: always
  type: int
level:
  description: The level run.
  returned: always
  type: str
time:
  description: When the verify ran (UTC, ISO 8601).
  returned: always
  type: str
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.backup import run_verify_module, store_argument_spec


def main() -> None:
    spec = store_argument_spec(
        level=dict(type="str", default="quick", choices=["quick", "full", "audit"]),
        source=dict(type="path"),
        point=dict(type="int"),
        fail_on_problems=dict(type="bool", default=True),
    ).update(required_if=[("level", "audit", ("source",))])
    module = spec.create_ansible_module(supports_check_mode=True)
    run_verify_module(module)


if __name__ == "__main__":
    main()
