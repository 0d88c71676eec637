# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:

    # Modules that can change the chain of a libvirt domain's disk: which domain and disk, and how.
    DOCUMENTATION = r"""
options:
  domain:
    description:
      - Name of a libvirt domain one of whose disks uses O(path). The task then changes that disk's chain in a way the
        domain keeps working with.
      - While the domain runs (or is paused), qemu holds the images open and locked, so no image of the disk's chain is
        written by this module; libvirt does the work instead.
      - While it is shut off, the module changes the images itself and then updates the domain's definition, so that the
        disk starts on the right image with a chain libvirt reads from the image headers (any C(<backingStore>) is
        removed from the definition).
      - Without it, the module works on the image files only. If a running qemu holds an image, the task fails with
        qemu's lock message and, when libvirt at O(uri) answers, names the domain using the image.
    type: str
  uri:
    description:
      - The libvirt connection URI for O(domain), and for naming the domain that holds an image when O(domain) is not
        set.
    type: str
    default: qemu:///system
  disk:
    description:
      - The target of the disk of O(domain) to work on, as C(virsh domblklist) lists it (for example V(vda)).
      - When not set, the disk is the one whose active image (the image the guest writes) is O(path), compared by
        device and inode, so any spelling or symlink of the file matches.
    type: str
requirements:
  - libvirt-python (Python library, on the managed node), only when O(domain) is set. Without it such a task fails with
    a message saying so; without O(domain) the library is only used, when present, to name the domain holding a locked
    image.
notes:
  - While a domain runs, libvirt gives the images of its chain to qemu's user (for example C(libvirt-qemu)), and the
    images it creates (overlays of external snapshots) are mode C(0600). Images that leave the chain of a running domain
    may stay owned by that user. The modules do not change owners or modes of a running domain's images, because qemu
    must keep access to them; use M(ansible.builtin.file) once they left the chain, or
    O(backingchain.qcow2.qcow2_commit#module:remove_committed).
"""

    # Modules that run a libvirt block job on a running domain.
    BLOCK_JOB = r"""
options:
  timeout:
    description:
      - Seconds to wait for the libvirt block job on a running domain. When they pass, the job is aborted, the domain
        keeps running on its original chain, and the task fails with RV(job) telling what happened.
      - Not set, the task waits as long as the job takes. When set, it must be positive.
      - Not used when the domain is shut off.
    type: int
  bandwidth:
    description:
      - Limit of the libvirt block job on a running domain, in bytes per second, or with a suffix K, M, G (powers of
        1024), for example V(100M).
      - Not set, the job runs as fast as it can.
      - Not used when the domain is shut off.
    type: str
"""

    # Modules that only read what libvirt says about a domain's disks (qcow2_info).
    INFO = r"""
options:
  domain:
    description:
      - Name of a libvirt domain (running or not) to describe; see RV(domain).
      - With O(path), the disk described is the one whose active image (the image the guest writes) is O(path), compared
        by device and inode, so any spelling or symlink of the file matches. The task fails when O(path) is the active
        image of no disk of the domain, naming the disk whose chain has it deeper if there is one. O(disk) selects the
        disk instead.
      - Without O(path) and O(disk) only the domain's state and its list of disks are returned.
    type: str
  uri:
    description:
      - The libvirt connection URI for O(domain) and O(users).
    type: str
    default: qemu:///system
  disk:
    description:
      - The target of the disk of O(domain) to describe, as C(virsh domblklist) lists it (for example V(vda)).
      - O(path) may then be left out, or be any image; RV(domain.depth) tells where it is in the disk's chain.
    type: str
requirements:
  - libvirt-python (Python library, on the managed node), only for O(domain) and O(users). Without it such a task fails
    with a message saying so.
"""
