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
      - The image whose chain is changed, normally the top of the chain (the image a VM uses).
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
      - Delete the files of the layers that left the chain. O(path) itself is never deleted.
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
"""

RETURN = r"""
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
  description: Images that left the chain of O(path).
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
  description: Guest bytes written into O(base); in check mode, the bytes of data that would be copied.
  returned: success
  type: int
  sample: 1048576
msg:
  description: Why nothing was committed.
  returned: when nothing changed
  type: str
  sample: /var/lib/libvirt/images/mid.qcow2 is not in the backing chain of /var/lib/libvirt/images/vm1.qcow2; nothing to commit
chain:
  description: The chain of O(path) after the task (in check mode, before it), top first, as M(backingchain.qcow2.qcow2_info) returns it.
  returned: success
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
"""

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_state import CommitOperation, commit_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import run_operation


def main():
    module = commit_argument_spec().create_ansible_module(supports_check_mode=True)
    run_operation(module, CommitOperation)


if __name__ == "__main__":
    main()
