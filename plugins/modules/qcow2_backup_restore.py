#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_backup_restore
short_description: Restore a point of a qcow2 backup store, as a standalone image or as an instant overlay
version_added: "0.1.0"
description:
  - Restores point O(point) of a store that M(backingchain.qcow2.qcow2_backup) writes.
  - V(full) writes O(dest) as a standalone image of the chain up to the point (qcow2 or raw), each cluster read once
    from the layer that holds it; no replay of increments.
  - V(instant) creates O(dest) as a new qcow2 overlay on the point's layer, ready to boot at once. The store records
    it, and retention neither merges nor drops that chain while the overlay reads through it; delete the overlay, or
    flatten it (M(backingchain.qcow2.qcow2_rebase) with an empty backing file), and the store releases the point at
    its next run.
  - An existing O(dest) is left alone (no change) unless O(force) is set; the module does not compare its contents
    with the point.
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Without O(force), a second run finds O(dest) and changes nothing.
  safe_file_operations:
    description: Writes a full restore under a temporary name in O(dest)'s directory and renames it into place.
    support: full
options:
  store:
    description: The backup store.
    type: path
    required: true
  point:
    description: The point's number (RV(backingchain.qcow2.qcow2_backup#module:seq)); not set, the latest.
    type: int
  dest:
    description: The image to write.
    type: path
    required: true
  mode:
    description: V(full) (a standalone image) or V(instant) (an overlay on the store's layer).
    type: str
    choices: [full, instant]
    default: full
  format:
    description: The format of a V(full) restore (an instant one is always qcow2).
    type: str
    choices: [qcow2, raw]
    default: qcow2
  force:
    description: Write O(dest) again although it exists (a full restore only).
    type: bool
    default: false
seealso:
  - module: backingchain.qcow2.qcow2_backup
  - module: backingchain.qcow2.qcow2_backup_verify
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Restore last Tuesday's point as a new disk
  backingchain.qcow2.qcow2_backup_restore:
    store: /backup/vm1-vda
    point: 12
    dest: /var/lib/libvirt/images/vm1-restored.qcow2

- name: Boot the latest point at once, without copying it
  backingchain.qcow2.qcow2_backup_restore:
    store: /backup/vm1-vda
    dest: /var/lib/libvirt/images/vm1-instant.qcow2
    mode: instant
"""

RETURN = r"""
dest:
  description: The image written (or left alone).
  returned: success
  type: str
point:
  description: The point restored, as the manifest records it.
  returned: success
  type: dict
bytes_written:
  description: Guest bytes written (a full restore), or the overlay's size (an instant one).
  returned: changed, not in check mode
  type: int
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.backup import run_restore_module, store_argument_spec


def main() -> None:
    spec = store_argument_spec(
        point=dict(type="int"),
        dest=dict(type="path", required=True),
        mode=dict(type="str", default="full", choices=["full", "instant"]),
        format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
        force=dict(type="bool", default=False),
    )
    module = spec.create_ansible_module(supports_check_mode=True)
    run_restore_module(module)


if __name__ == "__main__":
    main()
