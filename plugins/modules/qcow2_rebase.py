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
extends_documentation_fragment:
  - backingchain.qcow2._attributes
  - backingchain.qcow2._attributes.ACTIONGROUP_QCOW2
  - backingchain.qcow2._engine
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
    type: path
    required: true
  backing_file:
    description:
      - The new backing file, recorded as written here; a relative name is relative to the directory of O(path).
      - The empty string makes the image standalone.
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
"""

RETURN = r"""
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
  description: The backing file name recorded now (in check mode, that would be recorded); empty for none.
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
  description: Guest bytes written into the image; 0 in check mode.
  returned: success
  type: int
  sample: 65536
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
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.rebase_state import RebaseOperation, rebase_argument_spec


def main():
    module = rebase_argument_spec().create_ansible_module(supports_check_mode=True)
    run_operation(module, RebaseOperation)


if __name__ == "__main__":
    main()
