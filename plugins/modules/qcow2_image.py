#!/usr/bin/python
# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qcow2_image
short_description: Make sure a qcow2 image exists with given properties, or does not exist
version_added: "0.1.0"
description:
  - Creates a qcow2 image, standalone, as an overlay of a backing file, or as a copy of another image's whole chain
    (or of a raw file).
  - On an existing image, compares only the properties the task sets. A larger O(size) grows the image and
    O(lazy_refcounts) is switched in place; a smaller O(size) fails.
  - Differences that cannot be changed in place (O(cluster_size), O(compat), O(refcount_bits), O(extended_l2), the
    backing file) fail unless O(force=true), which recreates the image and discards its data.
  - Removes an image with O(state=absent). Images that other images use as their backing file are not detected; removing
    one breaks those images.
extends_documentation_fragment:
  - ansible.builtin.files
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._attributes.FILES
  - backingchain.qcow2._engine
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
  safe_file_operations:
    support: full
options:
  path:
    description:
      - The image file.
      - A new image gets Ansible's default mode for new files (V(0666) minus the umask) unless O(mode) says otherwise;
        a recreated image keeps the owner and mode of the image it replaces.
    type: path
    required: true
  state:
    description:
      - V(present) makes sure the image exists with the requested properties.
      - V(absent) removes it. A file at O(path) that is not a qcow2 image is never removed; the task fails instead.
    type: str
    choices: [present, absent]
    default: present
  size:
    description:
      - Virtual size of the image in bytes, or a number with a suffix V(K), V(M), V(G), V(T), V(P) or V(E) (powers
        of 1024, as in qemu-img; V(KiB) ... V(EiB) mean the same). Must be a multiple of 512 bytes.
      - Required to create an image without O(backing_file) or O(source). With O(backing_file) the default is the backing
        file's virtual size; with O(source) the source's.
      - A larger size grows an existing image. A smaller size fails; shrinking would discard data.
    type: str
  backing_file:
    description:
      - Backing file of the image, recorded in its header as written here. A relative name is relative to the
        directory of O(path), as qemu reads it.
      - On an existing image a different backing file is not changed silently; the task fails and points to
        M(backingchain.qcow2.qcow2_rebase), unless O(force=true) recreates the image as an empty overlay.
      - The empty string asks for an image without backing file.
    type: str
  backing_format:
    description:
      - Format of O(backing_file), always recorded in the header. Must match the file; a mismatch fails.
    type: str
    choices: [qcow2, raw]
    default: qcow2
  source:
    description:
      - Create O(path) as a standalone copy of this image's guest view (the image with its whole backing chain), or of a
        raw file.
      - Only used to create the image (or to recreate it with O(force=true)); an existing image's content is not compared
        with the source.
    type: path
  compress:
    description:
      - Write the copy's data clusters compressed (zlib). Only with O(source).
    type: bool
    default: false
  cluster_size:
    description:
      - Cluster size in bytes (or with a suffix, like V(64K) or V(2M)); a power of two from 512 to 2 MiB.
      - New images get V(65536) when not set. On an existing image it is only compared when set.
    type: str
  compat:
    description:
      - qcow2 version. V(1.1) is qcow2 v3, V(0.10) is v2. Quote the value in YAML.
      - New images get V(1.1) when not set. On an existing image it is only compared when set.
    type: str
    choices: ['0.10', '1.1']
  refcount_bits:
    description:
      - Width of a reference count. Widths other than 16 need O(compat=1.1).
      - New images get V(16) when not set. On an existing image it is only compared when set.
    type: int
    choices: [1, 2, 4, 8, 16, 32, 64]
  lazy_refcounts:
    description:
      - Delay reference count updates (qcow2 v3 only). Changed in place on an existing image.
      - New images get V(false) when not set.
    type: bool
  extended_l2:
    description:
      - Use extended L2 entries (subclusters; qcow2 v3 and clusters of at least 16 KiB).
      - New images get V(false) when not set. On an existing image it is only compared when set.
    type: bool
  preallocation:
    description:
      - Preallocation when the image is created; V(off) when not set. V(falloc) and V(full) reserve every guest byte
        and fail early when the filesystem does not have that much free space.
      - An existing image's preallocation cannot be read back from it, so it is never compared, and growing an image
        does not preallocate the new part.
      - With O(backing_file) only V(off) is possible, unless O(extended_l2=true).
    type: str
    choices: ['off', metadata, falloc, full]
  force:
    description:
      - Recreate an existing image that differs in something that cannot be changed in place. The new image is built
        beside the old one and renamed over it, so the old image stays intact until the new one is complete.
      - B(The image's data is lost.) Properties the task does not set are taken over from the old image, including its
        backing file.
      - Never shrinks an image.
    type: bool
    default: false
seealso:
  - module: backingchain.qcow2.qcow2_info
  - module: backingchain.qcow2.qcow2_rebase
  - module: backingchain.qcow2.qcow2_snapshot
author:
  - backingchain.qcow2 contributors (@backingchain)
"""

EXAMPLES = r"""
- name: A 20 GiB standalone image
  backingchain.qcow2.qcow2_image:
    path: /var/lib/libvirt/images/base.qcow2
    size: 20G
    mode: "0640"

- name: An overlay on a golden image; the backing format is recorded in its header
  backingchain.qcow2.qcow2_image:
    path: /var/lib/libvirt/images/vm1.qcow2
    backing_file: base.qcow2
    backing_format: qcow2

- name: Grow the overlay (growing only; a smaller size fails)
  backingchain.qcow2.qcow2_image:
    path: /var/lib/libvirt/images/vm1.qcow2
    size: 40G

- name: A compressed standalone copy of vm1's whole chain
  backingchain.qcow2.qcow2_image:
    path: /srv/export/vm1-flat.qcow2
    source: /var/lib/libvirt/images/vm1.qcow2
    compress: true

- name: Recreate scratch disks with 2 MiB clusters, whatever they held
  backingchain.qcow2.qcow2_image:
    path: /var/lib/libvirt/images/scratch.qcow2
    size: 100G
    cluster_size: 2M
    force: true

- name: Remove an image
  backingchain.qcow2.qcow2_image:
    path: /var/lib/libvirt/images/old.qcow2
    state: absent

- name: Allow backing files only from the image directory, for every module of the collection
  module_defaults:
    group/backingchain.qcow2.qcow2:
      allowed_backing_dirs:
        - /var/lib/libvirt/images
  block:
    - name: An overlay whose chain must stay in the image directory
      backingchain.qcow2.qcow2_image:
        path: /var/lib/libvirt/images/vm2.qcow2
        backing_file: /var/lib/libvirt/images/base.qcow2
"""

RETURN = r"""
image_format:
  description: V(raw) when the task failed because a file it reads as a qcow2 image is not one (test this, not the message).
  returned: failure
  type: str
  sample: raw
image:
  description:
    - The image after the task, as M(backingchain.qcow2.qcow2_info) returns it in RV(backingchain.qcow2.qcow2_info#module:image).
    - The keys of C(qemu-img info --output=json) with C(-) turned into C(_), same values.
    - In check mode, the image as it is before the task.
  returned: when O(state=present) and the image exists
  type: dict
  sample:
    filename: /var/lib/libvirt/images/vm1.qcow2
    format: qcow2
    virtual_size: 21474836480
    actual_size: 200704
    cluster_size: 65536
    dirty_flag: false
    backing_filename: base.qcow2
    full_backing_filename: /var/lib/libvirt/images/base.qcow2
    backing_filename_format: qcow2
    format_specific:
      type: qcow2
      data:
        compat: "1.1"
        compression_type: zlib
        lazy_refcounts: false
        refcount_bits: 16
        corrupt: false
        extended_l2: false
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.image import ImageOperation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation


def main() -> None:
    spec = common_argument_spec().update(
        dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            size=dict(type="str"),
            backing_file=dict(type="str"),
            backing_format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
            source=dict(type="path"),
            compress=dict(type="bool", default=False),
            cluster_size=dict(type="str"),
            compat=dict(type="str", choices=["0.10", "1.1"]),
            refcount_bits=dict(type="int", choices=[1, 2, 4, 8, 16, 32, 64]),
            lazy_refcounts=dict(type="bool"),
            extended_l2=dict(type="bool"),
            preallocation=dict(type="str", choices=["off", "metadata", "falloc", "full"]),
            force=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("source", "backing_file")],
        required_if=[("compress", True, ("source",))],
    )
    module = spec.create_ansible_module(supports_check_mode=True, add_file_common_args=True)
    run_operation(module, ImageOperation)


if __name__ == "__main__":
    main()
