#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_info
short_description: Read a qcow2 image and its backing chain, as qemu-img info does
version_added: "0.1.0"
description:
  - Returns what C(qemu-img info --backing-chain --output=json) prints, for the image and every image below it,
    with C(-) in keys turned into C(_).
  - Optionally checks the image's metadata, as C(qemu-img check) does, without repairing anything.
  - With O(domain), also returns what libvirt says about a domain's disk (RV(domain)); with O(users), which libvirt
    domains, running or shut off, use the image (RV(users)).
  - Everything is read without taking qemu's locks (unless O(force_share=false) for O(path) itself), so images of
    running domains can be read; nothing is ever written, in check mode or not.
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.INFO_MODULE
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
  - backingchain.qcow2._domain.INFO
options:
  path:
    description:
      - The qcow2 image to read. A file that is not a qcow2 image fails the task.
      - Required unless O(domain) is set. Without it, only RV(domain) is returned.
    type: path
  backing_chain:
    description:
      - Also read every backing file below the image and return them in RV(chain).
      - With V(false) only the image itself is opened; its backing file need not exist.
    type: bool
    default: true
  check:
    description:
      - Check the image's metadata (reference counts, tables) like C(qemu-img check), and return RV(check).
      - Only the image itself is checked, not its backing files. Nothing is repaired.
    type: bool
    default: false
  force_share:
    description:
      - Read without taking qemu's image locks, like C(qemu-img info -U), so that images a running VM has open can be
        read. What a running VM writes at the same moment may not be seen yet.
      - With V(false) the task fails, with qemu's message, when another process holds the image for writing.
      - Only applies to O(path) and its chain; what RV(domain) and RV(users) need from image headers is always read
        without locks.
    type: bool
    default: true
  users:
    description:
      - Return in RV(users) every disk of every libvirt domain at O(uri) that has O(path) anywhere in its chain, as the
        active image or as a backing image, compared by device and inode. Shut-off domains are included, from their
        persistent definition; they hold no lock on the image but will open it at their next start.
      - Each disk's chain is the one RV(domain.chain) describes. Chains that cannot be followed past an image (a missing
        backing file, a file outside O(allowed_backing_dirs)) are looked at as far as they go; a domain that disappears
        while it is looked at is left out.
      - Requires O(path).
    type: bool
    default: false
seealso:
  - module: backingchain.qcow2.qcow2_image
  - module: backingchain.qcow2.qcow2_commit
  - module: backingchain.qcow2.qcow2_bitmap
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: Read an overlay and its chain
  backingchain.qcow2.qcow2_info:
    path: /var/lib/libvirt/images/vm1.qcow2
  register: vm1

- name: Show the chain, top first
  ansible.builtin.debug:
    msg: "{{ vm1.chain | map(attribute='filename') | list }} ({{ vm1.chain_depth }} images)"

- name: Check the image's metadata
  backingchain.qcow2.qcow2_info:
    path: /var/lib/libvirt/images/vm1.qcow2
    backing_chain: false
    check: true
  register: vm1_check
  failed_when: vm1_check.check.exit_code != 0

- name: Read the chain of disk vda of domain vm1, as libvirt sees it (no path needed)
  backingchain.qcow2.qcow2_info:
    domain: vm1
    disk: vda
  register: vm1_vda

- name: Show the disk's active image and whether the domain runs
  ansible.builtin.debug:
    msg: "{{ vm1_vda.domain.chain[0].file }} ({{ vm1_vda.domain.state }})"

- name: Which domains use the golden image, running or not?
  backingchain.qcow2.qcow2_info:
    path: /var/lib/libvirt/images/golden.qcow2
    backing_chain: false
    users: true
  register: golden

- name: Refuse to go on while a domain uses it
  ansible.builtin.assert:
    that: golden.users | length == 0
    fail_msg: "{{ golden.users | map(attribute='domain') | unique | join(', ') }} use the golden image"
"""

RETURN = r"""
image_format:
  description: V(raw) when the task failed because a file it reads as a qcow2 image is not one (test this, not the message).
  returned: failure
  type: str
  sample: raw
image:
  description:
    - The image at O(path), as C(qemu-img info --output=json) prints it, with C(-) in keys turned into C(_) (also in
      nested dictionaries); values unchanged.
    - Keys qemu-img leaves out (for example C(backing_filename) of a standalone image, C(snapshots) without snapshots)
      are left out here too.
  returned: when O(path) is set
  type: dict
  contains:
    filename:
      description: The image file, as given in O(path).
      type: str
      returned: always
      sample: /var/lib/libvirt/images/vm1.qcow2
    format:
      description: Image format.
      type: str
      returned: always
      sample: qcow2
    virtual_size:
      description: Size of the guest disk in bytes.
      type: int
      returned: always
      sample: 21474836480
    actual_size:
      description: Bytes the file occupies on disk.
      type: int
      returned: always
      sample: 200704
    cluster_size:
      description: Cluster size in bytes.
      type: int
      returned: for qcow2 images
      sample: 65536
    dirty_flag:
      description: Whether the image was not closed cleanly (lazy refcounts).
      type: bool
      returned: always
      sample: false
    backing_filename:
      description: Backing file name as recorded in the header.
      type: str
      returned: when the image has a backing file
      sample: base.qcow2
    full_backing_filename:
      description: Backing file name resolved against the image's directory.
      type: str
      returned: when the image has a backing file
      sample: /var/lib/libvirt/images/base.qcow2
    backing_filename_format:
      description: Backing format recorded in the header.
      type: str
      returned: when the image records one
      sample: qcow2
    snapshots:
      description:
        - Internal snapshots, with qemu-img's keys (C(id), C(name), C(vm_state_size), C(date_sec), C(date_nsec),
          C(vm_clock_sec), C(vm_clock_nsec), C(icount)).
      type: list
      elements: dict
      returned: when the image has internal snapshots
      sample:
        - id: "1"
          name: before-upgrade
          vm_state_size: 0
          date_sec: 1764115200
          date_nsec: 0
          vm_clock_sec: 0
          vm_clock_nsec: 0
          icount: 0
    format_specific:
      description:
        - qcow2 details (C(compat), C(compression_type), C(refcount_bits), C(lazy_refcounts), C(corrupt),
          C(extended_l2), C(bitmaps) ...).
      type: dict
      returned: for qcow2 images
      sample:
        type: qcow2
        data:
          compat: "1.1"
          compression_type: zlib
          lazy_refcounts: false
          refcount_bits: 16
          corrupt: false
          extended_l2: false
    bitmaps:
      description:
        - The image's persistent dirty bitmaps (the ones C(qemu-img info) lists in C(format_specific)), each with
          whether it can be trusted as the record of every write since it was added or cleared, and if not, why.
          Manage them with M(backingchain.qcow2.qcow2_bitmap).
        - An image whose bitmaps break qemu's rules (a broken directory, unknown flags, a table that does not fit the
          size) cannot be read at all, as by qemu; the task fails with the reason.
        - Empty when a program without bitmap support wrote the image after its bitmaps were saved (qemu then
          ignores them).
      type: list
      elements: dict
      returned: for qcow2 images
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
          description: V(auto) while it records writes, V(in-use) when a writer left it inconsistent.
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
          description: Consistent and enabled, so a record of every write since it was added or cleared.
          type: bool
          sample: true
        reason:
          description: Why it cannot be trusted; null when it can.
          type: str
          sample: null
chain:
  description:
    - The image and every backing file below it, top first; each entry has the keys of RV(image).
  returned: when O(path) is set and O(backing_chain=true)
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
chain_depth:
  description: Number of images in RV(chain), the image itself included.
  returned: when O(path) is set and O(backing_chain=true)
  type: int
  sample: 2
check:
  description:
    - What C(qemu-img check --output=json) prints, with C(-) in keys turned into C(_), plus C(exit_code) and C(messages).
  returned: when O(check=true)
  type: dict
  contains:
    exit_code:
      description: qemu-img check's exit status; V(0) clean, V(1) check not completed, V(2) corruptions, V(3) leaks only.
      type: int
      returned: always
      sample: 0
    messages:
      description: What the check reports, one line per problem.
      type: list
      elements: str
      returned: always
      sample: []
    check_errors:
      description: Number of errors that kept the check from completing.
      type: int
      returned: always
      sample: 0
    corruptions:
      description: Number of corruptions; absent when zero.
      type: int
      returned: when not zero
      sample: 1
    leaks:
      description: Number of leaked clusters; absent when zero.
      type: int
      returned: when not zero
      sample: 2
    image_end_offset:
      description: Offset of the image's end in the file.
      type: int
      returned: always
      sample: 262144
    total_clusters:
      description: Number of guest clusters.
      type: int
      returned: always
      sample: 327680
    allocated_clusters:
      description: Number of guest clusters the image itself holds.
      type: int
      returned: always
      sample: 12
    filename:
      description: The checked file.
      type: str
      returned: always
      sample: /var/lib/libvirt/images/vm1.qcow2
    format:
      description: Format of the checked file.
      type: str
      returned: always
      sample: qcow2
domain:
  description:
    - What libvirt says about O(domain) and the disk the task is about.
  returned: when O(domain) is set
  type: dict
  contains:
    name:
      description: The domain's name.
      type: str
      returned: always
      sample: vm1
    state:
      description: The domain's state as libvirt names it (V(running), V(paused), V(shut off), ...).
      type: str
      returned: always
      sample: running
    disks:
      description:
        - Every disk of the domain, in the order of its definition - the live one while a qemu process runs the
          domain (running or paused), the persistent one otherwise.
        - Each has C(disk) (the target), C(device) (V(disk), V(cdrom), ...), C(type) (V(file), V(block), V(network),
          V(volume)), C(file) (the active image; null for network and volume disks) and C(format) (the driver type;
          null when the definition has none).
      type: list
      elements: dict
      returned: always
      sample:
        - {disk: vda, device: disk, type: file, file: /var/lib/libvirt/images/vm1.qcow2, format: qcow2}
        - {disk: sda, device: cdrom, type: file, file: /var/lib/libvirt/images/install.iso, format: raw}
    disk:
      description: The target of the disk described (O(disk), or the disk whose active image is O(path)).
      type: str
      returned: when O(path) or O(disk) is set
      sample: vda
    depth:
      description:
        - Where O(path) is in the disk's RV(domain.chain) (V(0) - the active image); null when it is not in it (only
          possible with O(disk)).
      type: int
      returned: when O(path) is set
      sample: 0
    chain:
      description:
        - The disk's chain as libvirt sees it, active image first, each image with C(file) (absolute, as libvirt or
          the headers name it) and C(format).
        - For a domain a qemu process runs, the chain libvirt lists in the live definition - what qemu has open.
        - Otherwise the chain the next start uses - the images the definition lists in C(<backingStore>) (libvirt
          writes them after live jobs and trusts them over the headers), then, where that list is not ended by an
          empty C(<backingStore/>), the backing files the image headers name below the last image listed, as libvirt
          probes them. Every image of that part must be readable (and within O(allowed_backing_dirs)), or the task
          fails.
      type: list
      elements: dict
      returned: when O(path) or O(disk) is set
      sample:
        - {file: /var/lib/libvirt/images/vm1.qcow2, format: qcow2}
        - {file: /var/lib/libvirt/images/base.qcow2, format: qcow2}
users:
  description:
    - The disks of libvirt domains at O(uri), running or not, that have O(path) in their chain, sorted by domain and
      disk; empty when none has.
  returned: when O(users=true)
  type: list
  elements: dict
  contains:
    domain:
      description: The domain's name.
      type: str
      sample: vm1
    state:
      description: The domain's state as libvirt names it (V(running), V(paused), V(shut off), ...).
      type: str
      sample: shut off
    disk:
      description: The target of the disk.
      type: str
      sample: vda
    depth:
      description: Where O(path) is in the disk's chain; V(0) - it is the disk's active image.
      type: int
      sample: 1
    file:
      description: O(path) as the domain's chain names it.
      type: str
      sample: /var/lib/libvirt/images/golden.qcow2
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec, domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.info import InfoOperation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation


def main() -> None:
    spec = common_argument_spec().update(dict(
        backing_chain=dict(type="bool", default=True),
        check=dict(type="bool", default=False),
        force_share=dict(type="bool", default=True),
        users=dict(type="bool", default=False),
    ), required_one_of=[["path", "domain"]], required_if=[["check", True, ["path"]], ["users", True, ["path"]]])
    # path is optional here: domain alone describes the domain, domain and disk that disk.
    spec.argument_spec["path"] = dict(spec.argument_spec["path"], required=False)
    module = spec.merge(domain_argument_spec()).create_ansible_module(supports_check_mode=True)
    run_operation(module, InfoOperation)


if __name__ == "__main__":
    main()
