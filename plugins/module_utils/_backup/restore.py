# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Restore a sealed point: full (a standalone qcow2 image of the chain up to the point, written by the engine's
convert: each cluster read once from the layer that holds it, no replay) or instant (a new qcow2 overlay on the
point's layer, ready to boot at once; the point is pinned so that retention leaves its chain alone while the overlay
reads through it).

A pin lasts as long as the overlay exists and its backing chain still reaches the layer: delete the overlay,
or flatten it (qcow2_rebase with an empty backing file), and the next run on the store releases the pin.
"""

from __future__ import annotations

import datetime
import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .lock import store_lock
from .manifest import find_point, layer_path, loaded, save
from .recover import recover

MODES = ("full", "instant")
FORMATS = ("qcow2", "raw")


def restore(store: str, dest: str, point: int | None = None, mode: str = "full", fmt: str = "qcow2",
            policy: api.ChainPolicy | None = None) -> dict:
    """Write dest from point (None: the latest); the point restored and what was written."""
    if mode not in MODES:
        raise api.InvalidArgumentError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
    if fmt not in FORMATS or (mode == "instant" and fmt != "qcow2"):
        raise api.InvalidArgumentError("format must be qcow2%s, not %r"
                                       % (" for an instant restore" if mode == "instant" else " or raw", fmt))
    if _inside(dest, store):
        raise api.InvalidArgumentError("Restore %s outside the backup store %s: the store deletes every file it does "
                                       "not list" % (dest, store), dest)
    with store_lock(store, "restore to %s" % dest):
        manifest = loaded(store)
        recover(store, manifest, policy)
        chain, found = find_point(manifest, point)
        layer = layer_path(store, chain, found)
        if mode == "full":
            if fmt == "raw":
                written = api.export_raw(layer, dest, policy=policy)
            else:
                written = api.convert(layer, dest, policy=policy).bytes_written
            return {"point": found, "dest": dest, "bytes_written": written}
        if os.path.exists(dest):
            raise api.InvalidArgumentError("%s already exists; an instant restore creates a new overlay" % dest, dest)
        api.create_image(dest, api.CreateOptions(backing_file=os.path.abspath(layer), backing_format="qcow2"),
                         policy=policy)
        manifest["pins"].append({"point": found["seq"], "overlay": os.path.abspath(dest), "layer": os.path.abspath(layer),
                                 "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        save(store, manifest)
        return {"point": found, "dest": dest, "bytes_written": os.path.getsize(dest)}


def _inside(path: str, directory: str) -> bool:
    real = os.path.realpath(directory)
    return os.path.commonpath([os.path.realpath(path), real]) == real
