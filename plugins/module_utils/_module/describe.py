# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Images as modules return them (qemu-img info keys, - turned into _) and chains as diffs show them."""

from __future__ import annotations

import typing as t

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def underscore_keys(value: t.Any) -> t.Any:
    """qemu's JSON with every dict key's - turned into _ (Ansible variables cannot hold -); values unchanged."""
    if isinstance(value, dict):
        return dict((key.replace("-", "_"), underscore_keys(item)) for key, item in value.items())
    if isinstance(value, list):
        return [underscore_keys(item) for item in value]
    return value


def read_chain(path: str, policy: api.ChainPolicy, backing_chain: bool = True) -> list[dict]:
    """qemu-img info [--backing-chain] of a qcow2 image, top first.

    Opened with force_share: reading a header while a VM runs on the image is safe and lets a task that
    changes nothing succeed on an image in use; every write takes the locks and fails then.
    """
    api.require_qcow2(path)
    return api.image_info(path, backing_chain=backing_chain, force_share=True, policy=policy)


def chain_entry(info: dict) -> dict:
    """One image of a chain as diffs show it, from its qemu-img info dict."""
    return dict(api.chain_entry(info)._asdict())


def describe_chain(chain: t.Iterable[dict | api.ChainEntry]) -> list[dict]:
    """A chain as diffs show it, from qemu-img info dicts or the engine's ChainEntry records."""
    return [dict(entry._asdict()) if isinstance(entry, tuple) else chain_entry(entry) for entry in chain]
