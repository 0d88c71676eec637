#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_snapshot
short_description: Take, delete and revert to snapshots of a qcow2 image
version_added: "0.1.0"
description:
  - Internal snapshots (O(type=internal)) live inside the image, as with C(qemu-img snapshot). A snapshot is present or
    absent by name, and O(state=reverted) makes the image's current state that of the snapshot.
  - External snapshots (O(type=external)) add a new qcow2 overlay on top of the image. The overlay becomes the image
    that is written to; the image at O(path) becomes its backing file and must not be written any more. Remove an
    external snapshot by committing the overlay (M(backingchain.qcow2.qcow2_commit)).
  - Without O(domain), this module works on images that no VM is running on. A running VM holds qemu's lock on its
    image; the task then fails with qemu's lock message and names the libvirt domain using the image.
  - With O(domain) and O(type=external), the snapshot is taken for the domain's disk whose active image is O(path). On
    a running domain libvirt takes an atomic disk-only snapshot and the guest goes on writing to O(overlay); on a
    shut-off domain the module writes O(overlay) and points the disk's definition at it. Either way the domain then
    uses O(overlay) with O(path) as its backing file.
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
  - backingchain.qcow2._domain
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  path:
    description:
      - The image to snapshot.
      - For O(type=internal), a qcow2 image. For O(type=external), a qcow2 or raw image; it becomes the overlay's backing
        file, recorded by its absolute path together with its format.
      - With O(domain), the active image of the domain's disk.
    type: path
    required: true
  name:
    description:
      - Name of the internal snapshot. Required with O(type=internal).
      - Snapshots are matched by name only, never by their numeric id.
      - With O(type=external), the name of libvirt's snapshot object when O(metadata=true); libvirt picks one (the
        creation time) when not set. Otherwise not used.
    type: str
  type:
    description:
      - V(internal) keeps the snapshot inside the image; V(external) creates O(overlay).
    type: str
    choices: [internal, external]
    default: internal
  state:
    description:
      - V(present) takes the snapshot when none of that name exists (for O(type=external), when O(overlay) does not
        exist yet).
      - V(absent) deletes every internal snapshot of that name.
      - V(reverted) makes the image's current state the snapshot's, discarding what was written since. It reports no
        change when the current state already is the snapshot's (nothing written since it was taken or last reverted
        to). Exactly one snapshot of that name must exist.
      - Reverting is refused while the image has persistent dirty bitmaps, as qemu refuses it; they could not say what
        the revert changed. Remove them first (M(backingchain.qcow2.qcow2_bitmap)).
      - With O(type=external) only V(present).
    type: str
    choices: [present, absent, reverted]
    default: present
  overlay:
    description:
      - The new overlay for O(type=external); required then. It gets the virtual size of O(path), qcow2 version 1.1 and
        64 KiB clusters, and Ansible's default mode for new files.
      - When it already exists as an overlay of O(path) (its recorded backing file is the same file as O(path)), nothing
        changes. When it exists as anything else, the task fails.
      - With O(domain), nothing changes when the disk already uses O(overlay) with O(path) directly below it. On a running
        domain libvirt creates the overlay (mode C(0600), owned by qemu's user while the domain runs) and records
        O(path) by the absolute path the domain uses, with its format.
    type: path
  quiesce:
    description:
      - Freeze the guest's file systems through the QEMU guest agent while a running domain's snapshot is taken, so
        that the overlay's backing file is consistent at the file-system level.
      - When the agent does not answer, the task fails, saying so, and nothing is changed.
      - Needs O(domain). A shut-off guest has nothing to freeze; the option is then not used.
    type: bool
    default: false
  metadata:
    description:
      - Keep a libvirt snapshot object (C(virsh snapshot-list)) for a running domain's snapshot, named by O(name).
      - Off by default; such an object must be deleted with C(virsh snapshot-delete --metadata) before the domain can
        be undefined normally, and the collection does not use it.
      - Needs O(domain). For a shut-off domain the overlay is made offline and no object is kept (the task warns).
    type: bool
    default: false
notes:
  - Persistent dirty bitmaps of O(path) are not re-created in a new external overlay; incremental backups based on them
    need a new full backup afterwards.
seealso:
  - module: backingchain.qcow2.qcow2_commit
  - module: backingchain.qcow2.qcow2_info
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Take an internal snapshot before an upgrade
  backingchain.qcow2.qcow2_snapshot:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: before-upgrade

- name: Go back to it
  backingchain.qcow2.qcow2_snapshot:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: before-upgrade
    state: reverted

- name: Delete it
  backingchain.qcow2.qcow2_snapshot:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: before-upgrade
    state: absent

- name: Freeze vm1.qcow2 under a new overlay; point the VM at the overlay afterwards
  backingchain.qcow2.qcow2_snapshot:
    path: /var/lib/libvirt/images/vm1.qcow2
    type: external
    overlay: /var/lib/libvirt/images/vm1-20260101.qcow2

- name: Snapshot the disk of domain vm1 (running or shut off), with the guest's file systems frozen
  backingchain.qcow2.qcow2_snapshot:
    path: /var/lib/libvirt/images/vm1.qcow2
    type: external
    overlay: /var/lib/libvirt/images/vm1-backup.qcow2
    domain: vm1
    quiesce: true
"""

RETURN = r"""
image_format:
  description: V(raw) when the task failed because a file it reads as a qcow2 image is not one (test this, not the message).
  returned: failure
  type: str
  sample: raw
snapshots:
  description:
    - The image's internal snapshots after the task (in check mode, before it), as C(qemu-img info) lists them, with
      C(-) in keys turned into C(_).
  returned: when O(type=internal)
  type: list
  elements: dict
  sample:
    - id: "1"
      name: before-upgrade
      vm_state_size: 0
      date_sec: 1764115200
      date_nsec: 0
      vm_clock_sec: 0
      vm_clock_nsec: 0
      icount: 0
snapshot:
  description: The snapshot named O(name), with the keys of RV(snapshots).
  returned: when O(type=internal), O(state) is V(present) or V(reverted), and the snapshot exists
  type: dict
  sample:
    id: "1"
    name: before-upgrade
    vm_state_size: 0
    date_sec: 1764115200
    date_nsec: 0
    vm_clock_sec: 0
    vm_clock_nsec: 0
    icount: 0
overlay:
  description: The overlay, as M(backingchain.qcow2.qcow2_info) returns an image.
  returned: when O(type=external) and the overlay exists (in check mode, when it existed already)
  type: dict
  sample:
    filename: /var/lib/libvirt/images/vm1-20260101.qcow2
    format: qcow2
    virtual_size: 21474836480
    backing_filename: /var/lib/libvirt/images/vm1.qcow2
    full_backing_filename: /var/lib/libvirt/images/vm1.qcow2
    backing_filename_format: qcow2
chain:
  description: The overlay's chain, top first, as M(backingchain.qcow2.qcow2_info) returns it.
  returned: when O(type=external) and the overlay exists (in check mode, when it existed already)
  type: list
  elements: dict
  sample:
    - filename: /var/lib/libvirt/images/vm1-20260101.qcow2
      format: qcow2
      virtual_size: 21474836480
      backing_filename: /var/lib/libvirt/images/vm1.qcow2
      backing_filename_format: qcow2
    - filename: /var/lib/libvirt/images/vm1.qcow2
      format: qcow2
      virtual_size: 21474836480
domain:
  description: The domain's disk after the task (in check mode, before it).
  returned: when O(domain) is set
  type: dict
  contains:
    name:
      description: The domain's name.
      type: str
      sample: vm1
    state:
      description: The domain's state when the task started, as libvirt names it (V(running), V(paused), V(shut off), ...).
      type: str
      sample: running
    disk:
      description: The target of the disk.
      type: str
      sample: vda
    chain:
      description:
        - The disk's chain, top first. For an active domain as libvirt reports it (absolute paths), for a shut-off one
          as the image headers describe it from the disk's source on.
      type: list
      elements: str
      sample: [/var/lib/libvirt/images/vm1-backup.qcow2, /var/lib/libvirt/images/vm1.qcow2]
    snapshot:
      description: The name of libvirt's snapshot object; null without O(metadata) or when no snapshot was taken.
      type: str
      returned: when the domain is running
      sample: null
    quiesced:
      description: Whether the guest's file systems were frozen for the snapshot.
      type: bool
      returned: when the domain is running
      sample: false
    definition_changed:
      description: Whether the domain's definition was (in check mode, would be) changed.
      type: bool
      returned: when the domain is shut off
      sample: true
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec, domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot import SnapshotOperation


def main() -> None:
    spec = common_argument_spec().update(
        dict(
            name=dict(type="str"),
            type=dict(type="str", default="internal", choices=["internal", "external"]),
            state=dict(type="str", default="present", choices=["present", "absent", "reverted"]),
            overlay=dict(type="path"),
            quiesce=dict(type="bool", default=False),
            metadata=dict(type="bool", default=False),
        ),
        required_if=[("type", "internal", ("name",)), ("type", "external", ("overlay",)),
                     ("quiesce", True, ("domain",)), ("metadata", True, ("domain",))],
    ).merge(domain_argument_spec())
    module = spec.create_ansible_module(supports_check_mode=True)
    run_operation(module, SnapshotOperation)


if __name__ == "__main__":
    main()
