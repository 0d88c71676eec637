# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""A backing file the task names: resolved as qemu resolves it, checked against the policy and its format."""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import check_backing_reference
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import BackingChainError
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import probe_is_qcow2


def check_backing_format(image_path, resolved, fmt):
    """Refuse a backing format that does not match the file: qcow2 metadata exposed to a guest as raw data,
    or a raw file parsed as qcow2, are both mistakes (and the first a security hole)."""
    is_qcow2 = probe_is_qcow2(resolved)
    if fmt == "raw" and is_qcow2:
        raise BackingChainError("Backing file %s of %s is a qcow2 image, but backing_format is raw; set backing_format: qcow2"
                                % (resolved, image_path), image_path)
    if fmt == "qcow2" and not is_qcow2:
        raise BackingChainError("Backing file %s of %s is not a qcow2 image, but backing_format is qcow2; set "
                                "backing_format: raw if it is a raw image" % (resolved, image_path), image_path)


def backing_chain_info(image_path, name, fmt, policy):
    """qemu-img info --backing-chain of the backing file ``name`` would have as image_path's backing file."""
    resolved = check_backing_reference(name, image_path, policy)
    if not os.path.exists(resolved):
        raise BackingChainError("Could not open backing file '%s' of '%s': No such file or directory" % (resolved, image_path),
                                image_path)
    check_backing_format(image_path, resolved, fmt)
    return api.image_info(resolved, backing_chain=True, policy=policy)
