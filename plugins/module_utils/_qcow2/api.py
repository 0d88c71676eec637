# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The engine's entry points for modules: path in, plain data out, every image closed on return.

Every function raises only Qcow2Error subclasses (errors.py) for problems a user can cause; a module
turns them into fail_json(msg=str(err)). MissingDependencyError carries ``library`` for
missing_required_lib().
"""

from __future__ import annotations

from .chain import ChainPolicy, open_chain
from .check import check_image, exit_code, report_as_qemu_json
from .create import CreateOptions, create
from .info import chain_info
from .layout import COMPRESSED, NORMAL, ZERO_ALLOC, classify
from . import snapshots as _snapshots
from .resize import grow

__all__ = [
    "ChainPolicy", "CreateOptions", "create_image", "image_info", "check", "list_snapshots", "create_snapshot",
    "revert_snapshot", "delete_snapshot", "grow_image", "allocated_bytes", "open_chain",
]


def create_image(path, options, policy=None, overwrite=False):
    """Create a qcow2 image (CreateOptions); returns its virtual size."""
    return create(path, options, policy=policy, overwrite=overwrite)


def image_info(path, backing_chain=True, force_share=False, policy=None):
    """qemu-img info [--backing-chain] --output=json as a list of dicts, top first."""
    with open_chain(path, force_share=force_share, policy=policy, backing=backing_chain) as chain:
        return chain_info(chain)


def check(path, repair=None, force_share=False):
    """qemu-img check [-r leaks|all]: {'result': qemu's json keys, 'exit_code': n, 'messages': [...]}."""
    with open_chain(path, fmt="qcow2", writable=bool(repair), force_share=force_share and not repair,
                    backing=False, check_mode=True) as chain:
        report = check_image(chain.top, repair=repair)
        return {"result": report_as_qemu_json(report, path), "exit_code": exit_code(report), "messages": report.messages}


def list_snapshots(path, force_share=False):
    with open_chain(path, fmt="qcow2", force_share=force_share, backing=False) as chain:
        return [_snapshots.snapshot_info(sn) for sn in chain.top.snapshot_list()]


def create_snapshot(path, name):
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        return _snapshots.snapshot_info(_snapshots.create_snapshot(chain.top, name))


def revert_snapshot(path, name):
    with open_chain(path, fmt="qcow2", writable=True) as chain:
        _snapshots.revert_snapshot(chain.top, name)


def delete_snapshot(path, name):
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        _snapshots.delete_snapshot(chain.top, name)


def grow_image(path, size):
    """Grow the virtual size; False if it already has that size; refuses to shrink."""
    with open_chain(path, fmt="qcow2", writable=True, backing=False) as chain:
        return grow(chain.top, size)


def allocated_bytes(img):
    """Guest bytes the image itself holds (data, compressed or preallocated zero clusters) in its active L1."""
    if img.format_name != "qcow2":
        return img.size
    geo = img.geo
    total = 0
    for l1_index in range(len(img.l1)):
        table = img.l2_table_offset(l1_index)
        if not table:
            continue
        for s in range(geo.slices_per_table):
            entries = img.l2_slice(table, s)
            for i in range(0, len(entries), geo.l2_entry_words):
                entry = entries[i]
                if not entry:
                    continue
                kind = classify(entry, geo.extended_l2)
                if kind in (NORMAL, COMPRESSED, ZERO_ALLOC):
                    total += geo.cluster_size
    return total
