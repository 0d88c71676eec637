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
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.INFO_MODULE
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
options:
  path:
    description:
      - The qcow2 image to read. A file that is not a qcow2 image fails the task.
    type: path
    required: true
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
    type: bool
    default: true
seealso:
  - module: backingchain.qcow2.qcow2_image
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
"""

RETURN = r"""
image:
  description:
    - The image at O(path), as C(qemu-img info --output=json) prints it, with C(-) in keys turned into C(_) (also in
      nested dictionaries); values unchanged.
    - Keys qemu-img leaves out (for example C(backing_filename) of a standalone image, C(snapshots) without snapshots)
      are left out here too.
  returned: success
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
chain:
  description:
    - The image and every backing file below it, top first; each entry has the keys of RV(image).
  returned: when O(backing_chain=true)
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
  returned: when O(backing_chain=true)
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
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.info_state import InfoOperation, info_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation


def main():
    module = info_argument_spec().create_ansible_module(supports_check_mode=True)
    run_operation(module, InfoOperation)


if __name__ == "__main__":
    main()
