# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Images as modules return them (qemu-img info keys, - turned into _) and chains as diffs show them."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import NotQcow2Error
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.image import probe_is_qcow2


def underscore_keys(value):
    """qemu's JSON with every dict key's - turned into _ (Ansible variables cannot hold -); values unchanged."""
    if isinstance(value, dict):
        return dict((key.replace("-", "_"), underscore_keys(item)) for key, item in value.items())
    if isinstance(value, list):
        return [underscore_keys(item) for item in value]
    return value


def require_qcow2(path):
    """NotQcow2Error unless path is a qcow2 image (a missing file gets the engine's 'No such file' error)."""
    if not probe_is_qcow2(path):
        raise NotQcow2Error("%s is not a qcow2 image" % path, path)


def read_chain(path, policy, backing_chain=True):
    """qemu-img info [--backing-chain] of a qcow2 image, top first.

    Opened with force_share: reading a header while a VM runs on the image is safe and lets a task that
    changes nothing succeed on an image in use; every write takes the locks and fails then.
    """
    require_qcow2(path)
    return api.image_info(path, backing_chain=backing_chain, force_share=True, policy=policy)


def chain_entry(info):
    """One image of a chain as diffs show it."""
    return {
        "filename": info["filename"],
        "format": info["format"],
        "virtual_size": info["virtual-size"],
        "backing_filename": info.get("backing-filename"),
        "backing_format": info.get("backing-filename-format"),
    }


def describe_chain(infos):
    return [chain_entry(info) for info in infos]
