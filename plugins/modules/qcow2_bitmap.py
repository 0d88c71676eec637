#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_bitmap
short_description: Add, clear, enable, disable, merge and remove persistent dirty bitmaps of a qcow2 image
version_added: "0.1.0"
description:
  - A persistent dirty bitmap records which parts of a qcow2 image were written since it was added or last cleared,
    for incremental backups that copy only those parts. It lives in the image, has a name, and records writes while it
    is enabled. qemu keeps enabled bitmaps up to date as a VM writes; so do this collection's modules.
  - This module does what C(qemu-img bitmap) does (C(--add), C(--remove), C(--clear), C(--enable), C(--disable),
    C(--merge)), with qemu's checks and messages, on one bitmap named O(name), declaratively. It reports a change only
    when the bitmap changes.
  - Several of those operations in one task (for example adding a bitmap and merging others into it) are written with
    one switch of the image's header, so an interrupted task leaves the bitmaps as they were or as wanted.
  - The image must not be in use; the bitmaps of a running domain's disk belong to libvirt (C(virsh checkpoint-create)).
    M(backingchain.qcow2.qcow2_info) lists every bitmap of every image of a chain, and whether it can be trusted.
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The bitmap before and after (RV(bitmap)'s keys; null when absent).
  idempotent:
    support: full
options:
  path:
    description:
      - The qcow2 image (compat 1.1; version 0.10 images cannot hold bitmaps).
    type: path
    required: true
  name:
    description:
      - The bitmap's name, at most 1023 bytes.
    type: str
    required: true
  state:
    description:
      - V(present) adds the bitmap when the image has none of that name.
      - V(cleared) also empties it (nothing recorded), adding it first when missing. Reports no change when it has
        nothing recorded already. Clearing is how an incremental backup starts recording afresh.
      - V(absent) removes it. A bitmap that a crashed writer left in use (inconsistent) can only be removed, as in
        qemu.
    type: str
    choices: [present, cleared, absent]
    default: present
  granularity:
    description:
      - How many bytes one bit of the bitmap stands for, when it is added (qemu-img's C(-g)), a power of two from 512
        bytes to 2 GiB, as bytes or a size such as V(64K).
      - Smaller granules make incremental backups smaller and the bitmap larger (qemu refuses a bitmap of more than
        512 MiB).
      - Not set, a new bitmap gets qemu's default, the image's cluster size but at least 4 KiB and at most 64 KiB.
        An existing bitmap keeps its granularity; a different one fails the task (remove the bitmap to start a new
        one).
    type: str
  enabled:
    description:
      - Whether the bitmap records writes (qemu's C(auto) flag; C(--enable), C(--disable)). A disabled bitmap keeps
        what it recorded until it was disabled.
      - Not set, a new bitmap is enabled and an existing one is left as it is.
    type: bool
  merge_from:
    description:
      - Bitmaps whose recorded writes are added to this one (C(--merge)), after O(state) is applied. Every granule that
        holds a byte one of them marks becomes marked, whatever the granularities.
      - Each must be consistent (not left in use); a bitmap of another image must come from an image of the same
        virtual size, as qemu requires.
      - Reports no change when this bitmap already marks everything they mark.
    type: list
    elements: dict
    suboptions:
      name:
        description: The bitmap to merge.
        type: str
        required: true
      path:
        description:
          - The image that holds it. Not set, O(path) itself (or, with O(merge_from[].backing_chain), its backing
            chain).
        type: path
      backing_chain:
        description:
          - Merge the bitmap of every image below O(merge_from[].path) (by default, below O(path)) that holds it. They
            must follow each other, each must be consistent, and their union is merged; what an external snapshot's
            overlays and the image below them recorded, together, for example.
        type: bool
        default: false
notes:
  - Reverting an internal snapshot (M(backingchain.qcow2.qcow2_snapshot) O(backingchain.qcow2.qcow2_snapshot#module:state=reverted))
    is refused while the image has bitmaps, as qemu refuses it; remove them first.
  - The collection's other modules keep enabled bitmaps true as qemu does, also when they commit and rebase
    (see the collection's docs/engine.md).
seealso:
  - module: backingchain.qcow2.qcow2_info
  - module: backingchain.qcow2.qcow2_snapshot
  - name: qemu-img bitmap
    description: The qemu-img command this module follows.
    link: https://www.qemu.org/docs/master/tools/qemu-img.html
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Record the writes to a shut-off VM's disk from now on
  backingchain.qcow2.qcow2_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-1

- name: Finer granules (smaller incremental backups, larger bitmap)
  backingchain.qcow2.qcow2_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-1
    granularity: 16K

- name: Stop recording, keeping what was recorded
  backingchain.qcow2.qcow2_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-1
    enabled: false

- name: Start afresh after a backup
  backingchain.qcow2.qcow2_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-1
    state: cleared

- name: Give a new overlay the checkpoint's bitmap, with what the image below it recorded so far
  backingchain.qcow2.qcow2_bitmap:
    path: /var/lib/libvirt/images/vm1-overlay.qcow2
    name: backup-1
    merge_from:
      - name: backup-1
        backing_chain: true
  register: merged

- name: Show how much changed since the checkpoint
  ansible.builtin.debug:
    msg: "{{ merged.bitmap.dirty_bytes | human_readable }} changed"

- name: Remove a bitmap, also one a crash left inconsistent
  backingchain.qcow2.qcow2_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-1
    state: absent
"""

RETURN = r"""
bitmap:
  description: The bitmap after the task (in check mode, as it would be).
  returned: unless O(state=absent)
  type: dict
  contains:
    name:
      description: The bitmap's name.
      type: str
      sample: backup-1
    granularity:
      description: Bytes one bit stands for.
      type: int
      sample: 65536
    flags:
      description: The flags C(qemu-img info) shows (V(auto) while it records writes, V(in-use) when inconsistent).
      type: list
      elements: str
      sample: [auto]
    in_use:
      description: Left flagged in use by a writer that did not close the image (killed, crashed); inconsistent.
      type: bool
      sample: false
    enabled:
      description: Whether it records writes.
      type: bool
      sample: true
    trusted:
      description:
        - Whether it can be trusted as the record of every write since it was added or cleared (consistent and
          enabled, in an image qemu accepts).
      type: bool
      sample: true
    reason:
      description: Why it cannot be trusted; null when it can.
      type: str
      sample: null
    dirty_bytes:
      description: Bytes the bitmap marks as written (whole granules); null when it is inconsistent.
      type: int
      sample: 1048576
actions:
  description:
    - The C(qemu-img bitmap) operations the task did (in check mode, would do), in order; empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: [add, "merge backup-1 of the chain from /var/lib/libvirt/images/vm1.qcow2 down"]
image_format:
  description:
    - V(raw) when the task failed because O(path) is not a qcow2 image. Test this rather than the message's wording.
  returned: failure
  type: str
  sample: raw
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.bitmap import BitmapOperation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation


def main() -> None:
    spec = common_argument_spec().update(dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "cleared", "absent"]),
        granularity=dict(type="str"),
        enabled=dict(type="bool"),
        merge_from=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            path=dict(type="path"),
            backing_chain=dict(type="bool", default=False),
        )),
    ))
    module = spec.create_ansible_module(supports_check_mode=True)
    run_operation(module, BitmapOperation)


if __name__ == "__main__":
    main()
