# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this doc fragment is PRIVATE to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment:

    # What every module shares because it runs the collection's qcow2 engine: the backing-chain policy
    # (settable for all modules at once through the action group) and the engine's requirement.
    DOCUMENTATION = r"""
options:
  allowed_backing_dirs:
    description:
      - Directories every backing file of the chain must lie in, after symlinks are resolved.
      - A chain that leaves them is refused before anything is read or written from outside.
      - When not set or empty, backing files may lie anywhere.
      - Set it for all modules of the collection at once with C(module_defaults) and C(group/backingchain.qcow2.qcow2).
    type: list
    elements: path
  allow_data_file:
    description:
      - Accept images that keep their guest data in an external data file (qcow2 C(data_file)).
      - Off by default, because the header of such an image names a file that the image then reads and writes.
      - Images with an external data file are read only; writing them is not supported.
    type: bool
    default: false
requirements:
  - construct (Python library, on the managed node)
  - zstandard (Python library, on the managed node; optional, for images with zstd-compressed clusters; Python 3.14 and later have it built in)
notes:
  - The modules read and write qcow2 images with the collection's own Python code; C(qemu-img) is not needed.
  - Like qemu, every write takes qemu's image locks and fails with qemu's message (for example
    C(Failed to get "write" lock)) when a running VM or another qemu process has the image open.
  - Reading an image to compare it with the task opens it without locks, like C(qemu-img info -U), so a task that
    changes nothing also succeeds on an image a running VM uses.
  - Relative backing file names are relative to the directory of the image that records them, as in qemu.
  - The backing format is always recorded; an image whose backing file has no recorded format and looks
    like qcow2 is refused rather than probed.
"""
