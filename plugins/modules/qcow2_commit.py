#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_commit
short_description: Merge layers of a qcow2 backing chain down into a lower image
version_added: "0.1.0"
description:
  - Writes what the layers from O(top) down to just above O(base) hold into O(base), as C(qemu-img commit) does, and
    takes those layers out of the chain of O(path). What the guest reads through O(path) does not change.
  - When O(top) is O(path) itself, O(path) stays the top of the chain, now empty and backed by O(base).
    Otherwise the image above O(top) is re-pointed to O(base).
  - Every step keeps the chain readable; an interrupted commit is finished by running the task again.
  - Nothing changes when O(top) is no longer in the chain of O(path) (an earlier run committed it), or when O(top) is
    O(path), holds no data and is already backed by O(base).
  - With O(domain), the chain is that of the domain's disk whose active image is O(path) (or the disk O(disk)). When
    O(top) is the active image, the disk moves onto O(base), and every image above O(base), the former active image
    included, leaves the disk's chain. On a running domain that is libvirt's active block commit, which copies while
    the guest keeps writing, waits until O(base) is in sync and pivots the guest onto it. On a shut-off domain the
    module commits offline and redefines the disk to start on O(base).
  - With O(domain) and O(top) below the active image, O(top) and the images down to just above O(base) are merged into
    O(base) and leave the chain; on a running domain through a libvirt block commit job.
  - With O(domain), nothing changes when O(top) is not in the disk's chain (or, without O(disk), when O(path) is in the
    chain of no disk of the domain). Check mode starts no job; it predicts the chain from the domain's current one.
  - libvirt allows one block job per disk. On a running domain whose disk already has an active commit of the active
    image into O(base) - left by an earlier run that was killed before its pivot; libvirt keeps such a job going, in
    sync with the guest's writes, until someone pivots or aborts it - the task adopts that job instead of starting
    one - it sets the job's speed to O(bandwidth), waits until the job is ready (within O(timeout)) and pivots, as if
    it had started the job itself (RV(job.adopted)). Check mode reports the pivot it would make as a change. Any other
    job on the disk (a pull, a commit below the active image, a copy, an active commit into another image) fails the
    task with a message that says what the job is and how to end it (C(virsh blockjob DOMAIN DISK --abort)).
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
  - backingchain.qcow2._domain
  - backingchain.qcow2._domain.BLOCK_JOB
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
      - The image whose chain is changed, normally the top of the chain (the image a VM uses).
      - With O(domain), the active image of the domain's disk; with O(disk) set, only the default of O(top).
    type: path
    required: true
  top:
    description:
      - The highest layer to commit; an image of the chain of O(path), in any spelling of its file name. Defaults to
        O(path).
    type: path
  base:
    description:
      - The image to commit into; an image of the chain below O(top). Defaults to the immediate backing file of O(top).
      - It grows when O(top) is larger.
    type: path
  remove_committed:
    description:
      - Delete the files of the layers that left the chain. Without O(domain), O(path) itself is never deleted.
      - With O(domain), the former active image is deleted too when the disk moved onto O(base); files are deleted only
        after the pivot (or the redefinition) succeeded.
      - Only do this when no other image uses them as a backing file.
    type: bool
    default: false
notes:
  - Images that other chains share (a golden image used by several overlays) must not be committed into; their other
    overlays would then read changed data. The module cannot detect such users.
seealso:
  - module: backingchain.qcow2.qcow2_snapshot
  - module: backingchain.qcow2.qcow2_rebase
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Merge an external snapshot's overlay back into the image below it
  backingchain.qcow2.qcow2_commit:
    path: /var/lib/libvirt/images/vm1-20260101.qcow2

- name: Drop the middle layer of vm1 -> mid -> base by committing it into base, and delete its file
  backingchain.qcow2.qcow2_commit:
    path: /var/lib/libvirt/images/vm1.qcow2
    top: /var/lib/libvirt/images/mid.qcow2
    remove_committed: true

- name: End a backup of running domain vm1 - merge the overlay back into vm1.qcow2, pivot and delete the overlay
  backingchain.qcow2.qcow2_commit:
    path: /var/lib/libvirt/images/vm1-backup.qcow2
    domain: vm1
    remove_committed: true
    timeout: 3600
    bandwidth: 200M
"""

RETURN = r"""
image_format:
  description: V(raw) when the task failed because a file it reads as a qcow2 image is not one (test this, not the message).
  returned: failure
  type: str
  sample: raw
top:
  description: The committed top layer (as the chain names it), or O(top) as given when there was nothing to commit.
  returned: success
  type: str
  sample: /var/lib/libvirt/images/mid.qcow2
base:
  description: The image committed into; null when there was nothing to commit.
  returned: success
  type: str
  sample: /var/lib/libvirt/images/base.qcow2
committed:
  description: Images that left the chain of O(path) (with O(domain), of the disk; the former active image included).
  returned: success
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/mid.qcow2]
removed:
  description: Files deleted because of O(remove_committed) (in check mode, those that would be).
  returned: success
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/mid.qcow2]
bytes_copied:
  description:
    - Guest bytes written into O(base); in check mode, the bytes of data that would be copied.
    - Null for a running domain, whose progress is in RV(job).
  returned: success
  type: int
  sample: 1048576
msg:
  description:
    - Why nothing was committed; or, on a running domain, that an active commit already running on the disk was (in check
      mode, would be) adopted and pivoted.
  returned: when nothing changed, or when a running job was adopted
  type: str
  sample: /var/lib/libvirt/images/mid.qcow2 is not in the backing chain of /var/lib/libvirt/images/vm1.qcow2; nothing to commit
chain:
  description:
    - The chain of O(path) after the task (in check mode, before it), top first, as M(backingchain.qcow2.qcow2_info)
      returns it.
    - With O(domain), the chain of the disk's active image; when the disk moved onto O(base), that of O(base).
  returned: success, except with O(domain) when no disk has O(path) in its chain
  type: list
  elements: dict
  sample:
    - filename: /var/lib/libvirt/images/vm1.qcow2
      format: qcow2
      virtual_size: 21474836480
      backing_filename: base.qcow2
      backing_filename_format: qcow2
    - filename: /var/lib/libvirt/images/base.qcow2
      format: qcow2
      virtual_size: 21474836480
job:
  description:
    - The libvirt block job that did the commit on a running domain. Also returned when the task fails because of the
      job.
  returned: when a job ran
  type: dict
  contains:
    job:
      description: V(active commit) (top was the active image) or V(commit).
      type: str
      sample: active commit
    outcome:
      description:
        - V(pivoted) (active commit done, the domain runs on O(base)), V(completed) (commit below the active image done),
          V(timeout) (not done within O(timeout); aborted, the domain keeps its chain) or V(failed) (the job ended
          without the expected chain, or the pivot failed; aborted where it still ran).
      type: str
      sample: pivoted
    aborted:
      description: Whether the module aborted the job.
      type: bool
      sample: false
    cur:
      description: Bytes the job had processed, as libvirt last reported.
      type: int
      sample: 8388608
    end:
      description: Bytes the job had to process, as libvirt last reported.
      type: int
      sample: 8388608
    duration:
      description: Seconds from the start of the job to its end (or abort).
      type: float
      sample: 1.52
    message:
      description: What happened, for a person.
      type: str
      sample: "committed /v/vm1-backup.qcow2 into /v/vm1.qcow2 and pivoted: disk vda of domain 'vm1' now runs on /v/vm1.qcow2"
    chain_before:
      description: The disk's chain before the job, top first.
      type: list
      elements: str
      sample: [/v/vm1-backup.qcow2, /v/vm1.qcow2]
    chain_after:
      description: The disk's chain after the job, top first.
      type: list
      elements: str
      sample: [/v/vm1.qcow2]
    relative_backing:
      description: Whether libvirt recorded the new backing file of the image above O(top) by a relative name.
      type: bool
      returned: when O(top) was below the active image
      sample: true
    adopted:
      description:
        - Whether the active commit was already running when the task started (an earlier run did not finish it), so
          that the task only waited for it and pivoted. RV(job.duration) and O(timeout) then count from the moment the
          task adopted it.
      type: bool
      returned: when O(top) was the active image
      sample: false
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
      description: The target of the disk; not returned when no disk has O(path) in its chain.
      type: str
      sample: vda
    chain:
      description:
        - The disk's chain, top first. For an active domain as libvirt reports it (absolute paths), for a shut-off one
          as the image headers describe it from the disk's source on.
        - Not returned when no disk has O(path) in its chain.
      type: list
      elements: str
      sample: [/var/lib/libvirt/images/vm1.qcow2]
    definition_changed:
      description: Whether the domain's definition was (in check mode, would be) changed.
      type: bool
      returned: when the domain is shut off
      sample: true
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import block_job_argument_spec, common_argument_spec, domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit import commit_operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation


def main() -> None:
    spec = common_argument_spec().update(dict(
        top=dict(type="path"),
        base=dict(type="path"),
        remove_committed=dict(type="bool", default=False),
    )).merge(domain_argument_spec()).merge(block_job_argument_spec())
    module = spec.create_ansible_module(supports_check_mode=True)
    run_operation(module, commit_operation)


if __name__ == "__main__":
    main()
