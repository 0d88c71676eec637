#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_rebase
short_description: Give a qcow2 image another backing file, or none
version_added: "0.1.0"
description:
  - Changes the backing file recorded in the image's header, as C(qemu-img rebase) does.
  - In V(safe) mode the image first receives every range where the old and the new backing chain read differently,
    so what the guest reads does not change. An empty O(backing_file) makes the image standalone (flattens it in place).
  - In V(unsafe) mode only the header changes; for files that were moved or renamed, or to record a missing backing
    format.
  - Nothing changes when the recorded backing file name and format already are the requested ones. When the name differs
    but names the same file (same device and inode), only the header changes, in either mode.
  - With O(domain), O(path) must be the active image of the domain's disk. On a running domain the rebase is a libvirt
    block pull into O(path) - the data of the images above O(backing_file) is copied into O(path) while the guest runs,
    and O(backing_file) becomes its backing file (V("") - everything is copied and O(path) stands alone). qemu can only
    pull from the chain it runs, so O(backing_file) must be an image of the disk's chain, and O(mode=unsafe) is refused.
    Nothing changes when O(backing_file) already is the direct backing file of O(path) (any spelling of the file), or
    when O(path) has none and O(backing_file) is empty; libvirt chooses how the new name is written (relative when the
    chain's links are relative, else absolute).
  - With O(domain) on a shut-off domain, the rebase is made offline as without O(domain), and the domain's definition is
    then updated so that libvirt reads the new chain from the image headers.
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
      - The qcow2 image to rebase.
      - With O(domain), the active image of the domain's disk.
    type: path
    required: true
  backing_file:
    description:
      - The new backing file, recorded as written here; a relative name is relative to the directory of O(path).
      - The empty string makes the image standalone.
      - On a running domain (O(domain)), an image of the disk's chain below O(path), in any spelling of its name.
    type: str
    required: true
  backing_format:
    description:
      - Format of O(backing_file), always recorded in the header; must match the file. Ignored when O(backing_file) is
        empty.
    type: str
    choices: [qcow2, raw]
    default: qcow2
  mode:
    description:
      - V(safe) keeps the guest's view unchanged; the old and the new backing chain must both be readable.
      - V(unsafe) rewrites the header only; the new backing file need not exist yet.
    type: str
    choices: [safe, unsafe]
    default: safe
seealso:
  - module: backingchain.qcow2.qcow2_commit
  - module: backingchain.qcow2.qcow2_image
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Make an overlay standalone, copying in everything its backing chain held
  backingchain.qcow2.qcow2_rebase:
    path: /var/lib/libvirt/images/vm1.qcow2
    backing_file: ""

- name: Move vm1 from base-v1 to base-v2, keeping what the guest reads
  backingchain.qcow2.qcow2_rebase:
    path: /var/lib/libvirt/images/vm1.qcow2
    backing_file: base-v2.qcow2

- name: After moving the images to a new directory, record the backing file's new name
  backingchain.qcow2.qcow2_rebase:
    path: /srv/images/vm1.qcow2
    backing_file: /srv/images/base.qcow2
    mode: unsafe

- name: Flatten the disk of running domain vm1 while it runs, at most 100 MiB/s, giving up after an hour
  backingchain.qcow2.qcow2_rebase:
    path: /var/lib/libvirt/images/vm1.qcow2
    backing_file: ""
    domain: vm1
    bandwidth: 100M
    timeout: 3600
"""

RETURN = r"""
image_format:
  description: V(raw) when the task failed because a file it reads as a qcow2 image is not one (test this, not the message).
  returned: failure
  type: str
  sample: raw
old_backing:
  description: The backing file name recorded before the task; empty when there was none.
  returned: success
  type: str
  sample: base-v1.qcow2
old_format:
  description: The backing format recorded before the task.
  returned: success
  type: str
  sample: qcow2
new_backing:
  description:
    - The backing file name recorded now (in check mode, that would be recorded); empty for none.
    - For a running domain in check mode, O(backing_file) as given; libvirt chooses the spelling when it pulls.
  returned: success
  type: str
  sample: base-v2.qcow2
new_format:
  description: The backing format recorded now; null without backing file.
  returned: success
  type: str
  sample: qcow2
header_only:
  description: Whether only the header changed (or would change); no data was copied.
  returned: success
  type: bool
  sample: false
bytes_copied:
  description:
    - Guest bytes written into the image (data and zeroed ranges); 0 when only the header changed.
    - In check mode, the bytes the rebase would write, planned from the images' metadata without reading guest data.
      Exact when O(backing_file) is an image of the chain of O(path) - only what the layers that leave the chain decide
      is copied, zero ranges included - and when only the header changes. An upper bound (RV(bytes_estimated)) when
      flattening (O(backing_file) empty) and when O(backing_file) is outside the chain - clusters that are all zeros, or
      that both backing chains read alike, are only found, and skipped, by reading them.
    - Null for a running domain, whose progress is in RV(job).
  returned: success
  type: int
  sample: 65536
bytes_estimated:
  description:
    - Whether RV(bytes_copied) is an upper bound rather than the exact count; only ever true in check mode (see
      RV(bytes_copied)).
  returned: success
  type: bool
  sample: false
image:
  description: The image after the task (in check mode, before it), as M(backingchain.qcow2.qcow2_info) returns it.
  returned: success
  type: dict
  sample:
    filename: /var/lib/libvirt/images/vm1.qcow2
    format: qcow2
    virtual_size: 21474836480
    backing_filename: base-v2.qcow2
    full_backing_filename: /var/lib/libvirt/images/base-v2.qcow2
    backing_filename_format: qcow2
job:
  description:
    - The libvirt block pull that did the rebase on a running domain. Also returned when the task fails because of the
      job.
  returned: when a job ran
  type: dict
  contains:
    job:
      description: V(pull).
      type: str
      sample: pull
    outcome:
      description:
        - V(completed) (the pull is done and the chain verified), V(timeout) (not done within O(timeout); aborted, the
          domain keeps its chain) or V(failed) (the job ended without the expected chain).
      type: str
      sample: completed
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
      sample: 0.83
    message:
      description: What happened, for a person.
      type: str
      sample: "pulled /v/mid.qcow2 into /v/vm1.qcow2 on disk vda of domain 'vm1'; its backing file is now /v/base.qcow2"
    chain_before:
      description: The disk's chain before the job, top first.
      type: list
      elements: str
      sample: [/v/vm1.qcow2, /v/mid.qcow2, /v/base.qcow2]
    chain_after:
      description: The disk's chain after the job, top first.
      type: list
      elements: str
      sample: [/v/vm1.qcow2, /v/base.qcow2]
    relative_backing:
      description: Whether libvirt recorded the new backing file by a relative name.
      type: bool
      sample: true
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
      sample: [/var/lib/libvirt/images/vm1.qcow2, /var/lib/libvirt/images/base.qcow2]
    definition_changed:
      description: Whether the domain's definition was (in check mode, would be) changed.
      type: bool
      returned: when the domain is shut off
      sample: false
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import block_job_argument_spec, common_argument_spec, domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.rebase import rebase_operation


def main() -> None:
    spec = common_argument_spec().update(dict(
        backing_file=dict(type="str", required=True),
        backing_format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
        mode=dict(type="str", default="safe", choices=["safe", "unsafe"]),
    )).merge(domain_argument_spec()).merge(block_job_argument_spec())
    module = spec.create_ansible_module(supports_check_mode=True)
    run_operation(module, rebase_operation)


if __name__ == "__main__":
    main()
