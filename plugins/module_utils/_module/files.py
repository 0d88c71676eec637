# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Files a task names: building an image beside its path, and the backing file the task names (resolved as
qemu resolves it, checked against the policy and its format)."""

from __future__ import annotations

import binascii
import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def backing_is(image_path: str, stored_name: str | None, wanted: str) -> bool:
    """Does a backing name stored in image_path's header name the file ``wanted`` (relative to image_path)?"""
    if stored_name is None:
        return False
    if stored_name == wanted:
        return True
    return api.same_file(api.resolve_backing_path(image_path, stored_name), api.resolve_backing_path(image_path, wanted))


def require_parent_directory(path: str) -> None:
    """A clear error instead of the engine's 'No such file' when the image's directory is missing."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise api.InvalidArgumentError("Cannot create %s: directory %s does not exist" % (path, parent), path)


def temp_path_beside(path: str) -> str:
    """A fresh hidden name in path's directory: an image built there is renamed over path without copying,
    and a relative backing name resolves the same for both."""
    directory, name = os.path.split(os.path.abspath(path))
    token = binascii.hexlify(os.urandom(4)).decode("ascii")
    return os.path.join(directory, ".%s.%s.tmp" % (name, token))


def check_backing_format(image_path: str, resolved: str, fmt: str) -> None:
    """Refuse a backing format that does not match the file: qcow2 metadata exposed to a guest as raw data,
    or a raw file parsed as qcow2, are both mistakes (and the first a security hole)."""
    is_qcow2 = api.is_qcow2(resolved)
    if fmt == "raw" and is_qcow2:
        raise api.BackingChainError("Backing file %s of %s is a qcow2 image, but backing_format is raw; set "
                                    "backing_format: qcow2" % (resolved, image_path), image_path)
    if fmt == "qcow2" and not is_qcow2:
        raise api.BackingChainError("Backing file %s of %s is not a qcow2 image, but backing_format is qcow2; set "
                                    "backing_format: raw if it is a raw image" % (resolved, image_path), image_path)


def backing_chain_info(image_path: str, name: str, fmt: str, policy: api.ChainPolicy) -> list[dict]:
    """qemu-img info --backing-chain of the backing file ``name`` would have as image_path's backing file."""
    resolved = api.check_backing_reference(name, image_path, policy)
    if not os.path.exists(resolved):
        raise api.BackingChainError("Could not open backing file '%s' of '%s': No such file or directory"
                                    % (resolved, image_path), image_path)
    check_backing_format(image_path, resolved, fmt)
    return api.image_info(resolved, backing_chain=True, policy=policy)
