#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_backup
short_description: Take a full or incremental backup point of a qcow2 image into a store that is itself a qcow2 chain
version_added: "0.1.0"
description:
  - Takes one backup point of the qcow2 image O(path) into the backup store O(store), a directory that holds, per
    disk, a plain qcow2 backing chain (C(0000.qcow2) the full, C(0001.qcow2) the first increment, backed by
    C(0000.qcow2) by a relative name, and so on) and a C(manifest.json) describing every point.
  - An incremental point copies only what changed since the previous point, as recorded by a persistent dirty bitmap
    the store keeps in the source image (C(bcq-backup-<store id>-<point>)). The store adds the next point's bitmap
    before it copies, and removes the previous one once the new point is sealed; it never touches other bitmaps.
  - With O(level=auto), a full is taken instead, with the reason in RV(reason) and in the manifest, when the store
    has no chain yet, the tracking bitmap is missing, left in use by a crash, disabled or otherwise untrusted, the
    source shrank, was replaced by another file or moved, the chain reached O(max_chain_length), a layer of the
    chain is missing, the last verify (M(backingchain.qcow2.qcow2_backup_verify)) failed, or the source cannot hold
    bitmaps (qcow2 compat 0.10).
  - Retention (O(keep), O(keep_days)) then merges the oldest increments into the full (a synthetic full, with the
    collection's commit) and drops older chains whole. A merge is recorded in the manifest first, so an interrupted
    one is finished by the next run on the store.
  - Every run takes exactly one point, so every run reports a change; check mode predicts the level, why, the bytes
    to copy and the retention steps.
  - Without O(domain), the image must not be in use (a shut-off VM's disk, or a frozen image).
  - With O(domain), the disk of a libvirt domain is backed up. While the domain runs, its changes come from libvirt
    checkpoints named like the bitmaps above. At each point the module freezes the guest's file systems when its
    QEMU guest agent answers (else the point is crash-consistent; RV(point) records which), creates the
    next checkpoint, puts a temporary overlay on the disk (C(.<image>.<checkpoint>.qcow2) beside the image), thaws
    the guest, copies the changed clusters from the image below the overlay, and commits the overlay back
    (C(blockcommit --active --pivot)). While the domain is shut off, the module works on the image as without
    O(domain) and then redefines the new bitmap as a libvirt checkpoint, so that a live point after the next start
    continues the same chain. Checkpoints of other names are never touched.
  - A qemu killed while it ran the domain leaves the bitmaps in use (inconsistent); the next point is then a full,
    with the reason.
  - Only one backup, merge, restore or verify runs on a store at a time; a second one fails naming the one running.
  - The store's layers are plain qcow2 images; any point can also be read directly with qemu tools
    (C(qemu-img convert chain-0001/0003.qcow2 out.qcow2)). M(backingchain.qcow2.qcow2_backup_restore) restores one.
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
requirements:
  - libvirt-python (Python library, on the managed node), only when O(domain) is set.
attributes:
  check_mode:
    support: full
    details:
      - Predicts the level, the reason, the bytes to copy and the retention steps, and writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Each run takes one backup point (a run with no change in the source writes a layer of a few hundred KiB).
options:
  path:
    description:
      - The qcow2 image to back up. Without O(domain), nothing may have it open for writing while the task runs.
      - With O(domain), selects the disk whose image is O(path) when O(disk) is not set.
      - One of O(path) and O(domain) is required.
    type: path
  domain:
    description:
      - Name of a libvirt domain (running, paused or shut off) whose disk to back up (see the description).
      - The disk is O(disk), else the one whose image is O(path), else the domain's only disk.
      - A live backup needs a qcow2 image of compat 1.1 (persistent bitmaps).
    type: str
  uri:
    description:
      - The libvirt connection URI for O(domain).
    type: str
    default: qemu:///system
  disk:
    description:
      - The target of the disk of O(domain) to back up, as C(virsh domblklist) lists it (for example V(vda)).
    type: str
  store:
    description:
      - The backup store of this disk, a directory (created when missing, in an existing directory). One store per
        disk.
    type: path
    required: true
  level:
    description:
      - V(auto) takes an increment when the chain allows one, else a full, and says why.
      - V(full) always starts a new chain with a full.
      - V(incremental) fails, with the reason, when an increment cannot be taken.
    type: str
    choices: [auto, full, incremental]
    default: auto
  max_chain_length:
    description:
      - The number of points a chain may hold before V(auto) starts a new one with a full.
    type: int
    default: 30
  keep:
    description:
      - Keep the newest O(keep) points of the store; older ones are merged into their chain's full or, for older
        chains, dropped.
      - With O(keep_days) as well, a point is kept when either keeps it. Neither set, every point is kept.
      - The latest point is always kept, and a chain an instant restore (M(backingchain.qcow2.qcow2_backup_restore)) reads through is not merged or dropped.
    type: int
  keep_days:
    description:
      - Keep the points taken in the last O(keep_days) days (see O(keep)).
    type: float
  compress:
    description:
      - Write the new layer's data clusters compressed (zlib, as C(qemu-img convert -c)); a cluster that does not
        shrink is stored plain. A store may mix compressed and plain layers, so this can change from run to run.
      - Retention's merges write the clusters they fold into a full plain, as C(qemu-img commit) does.
    type: bool
    default: false
notes:
  - A source shrunk and grown back to at least its former size between two points is not detected by the size
    check, and qemu does not mark the area as written; an audit (M(backingchain.qcow2.qcow2_backup_verify)) finds it.
  - Reverting an internal snapshot of the source is refused while it has bitmaps, as in qemu; removing the bitmap
    to do it makes the next point a full.
seealso:
  - module: backingchain.qcow2.qcow2_backup_restore
  - module: backingchain.qcow2.qcow2_backup_verify
  - module: backingchain.qcow2.qcow2_bitmap
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Back up the disk vda of a running VM (an increment when the chain allows one)
  backingchain.qcow2.qcow2_backup:
    domain: vm1
    disk: vda
    store: /backup/vm1-vda
    keep: 14

- name: Back up a shut-off VM's disk, keeping two weeks of points
  backingchain.qcow2.qcow2_backup:
    path: /var/lib/libvirt/images/vm1.qcow2
    store: /backup/vm1-vda
    keep_days: 14
  register: point

- name: Say what kind of point it was
  ansible.builtin.debug:
    msg: "point {{ point.seq }}: {{ point.level }} ({{ point.reason }}), {{ point.bytes_to_copy | human_readable }}"

- name: Keep a month of nightly points of a running VM, compressed
  backingchain.qcow2.qcow2_backup:
    domain: vm1
    disk: vda
    store: /backup/vm1-vda
    compress: true
    keep_days: 31

- name: Start a new chain every week
  backingchain.qcow2.qcow2_backup:
    path: /var/lib/libvirt/images/vm1.qcow2
    store: /backup/vm1-vda
    level: "{{ 'full' if ansible_facts['date_time']['weekday'] == 'Sunday' else 'auto' }}"
    keep: 20
"""

RETURN = r"""
level:
  description: The level of the point, V(full) or V(incremental) (in check mode, the one it would take).
  returned: success
  type: str
  sample: incremental
reason:
  description: Why that level; for an increment, the bitmap and point it builds on.
  returned: success
  type: str
  sample: the tracking bitmap bcq-backup-4f0c2a1e-6 is missing from the source
seq:
  description: The point's number in the store.
  returned: success
  type: int
  sample: 7
bytes_to_copy:
  description:
    - Guest bytes the point copies (after the run, copied or written as zero clusters; in check mode, for a full, at
      most this much).
  returned: success
  type: int
  sample: 268435456
point:
  description:
    - The point as the manifest records it (seq, time, level, reason, file, sha256 (one digest per 64 MiB part of
      the layer file), bytes_copied (guest bytes), file_bytes (the layer file's size), compressed, virtual_size,
      bitmap, consistency (V(offline), V(frozen) or V(crash)), state).
  returned: success, not in check mode
  type: dict
layer:
  description:
    - The point's layer file (a qcow2 image whose backing chain is the point; merges of later runs may fold it into
      its chain's full).
  returned: success, not in check mode
  type: str
  sample: /backup/vm1-vda/chain-0001/0007.qcow2
retention:
  description:
    - The retention steps, in order (in check mode, the ones it would take); C(action) is V(merge) (C(points) the
      full and the increment merged into it) or V(drop_chain).
  returned: success
  type: list
  elements: dict
  sample: [{action: merge, chain: 1, points: [0, 1]}]
recovered:
  description: What the run finished or removed first, left by an interrupted run.
  returned: success, not in check mode
  type: list
  elements: str
bitmaps_removed:
  description: The store's bitmaps removed from the source (the one the point copied from, stale ones).
  returned: success, not in check mode
  type: list
  elements: str
domain:
  description:
    - With O(domain), the domain (C(name), C(state)), the C(disk) backed up and its C(image); after a run of a
      shut-off domain, C(checkpoints) tells which checkpoints were C(redefined) and C(dropped) from libvirt's
      metadata.
  returned: success, with O(domain)
  type: dict
  sample: {name: vm1, state: running, disk: vda, image: /var/lib/libvirt/images/vm1.qcow2, checkpoints: null}
points:
  description: Every point of the store after the run, oldest first (each a RV(point) with its C(chain)).
  returned: success, not in check mode
  type: list
  elements: dict
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import domain_argument_spec, policy_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.backup import run_backup_module


def main() -> None:
    spec = policy_argument_spec().merge(domain_argument_spec()).update(dict(
        path=dict(type="path"),
        store=dict(type="path", required=True),
        level=dict(type="str", default="auto", choices=["auto", "full", "incremental"]),
        max_chain_length=dict(type="int", default=30),
        keep=dict(type="int"),
        keep_days=dict(type="float"),
        compress=dict(type="bool", default=False),
    ), required_one_of=[("path", "domain")])
    module = spec.create_ansible_module(supports_check_mode=True)
    run_backup_module(module)


if __name__ == "__main__":
    main()
