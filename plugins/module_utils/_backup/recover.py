# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""What every run that writes to a store does first, under the store lock: finish what a killed run left.

- a merge the manifest records is finished (merge.py);
- files in the store the manifest does not list (a listed layer's side file of digests counts as listed) are
  deleted: a layer written but never sealed, an engine temporary file, a chain directory whose chain was dropped;
- instant-restore pins whose overlay is gone, or no longer reads through its layer, are released.
"""

from __future__ import annotations

import os
import shutil

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .digests import side_path
from .lock import LOCK
from .manifest import MANIFEST, save
from .merge import finish_merge


def recover(store: str, manifest: dict, policy: api.ChainPolicy | None = None) -> list[str]:
    """Bring the store back to what its manifest says; what it did, for the task's result."""
    done = []
    if manifest["merging"]:
        merged = finish_merge(store, manifest, policy)
        done.append("finished the merge that made point %d a full" % merged["seq"])
    done.extend(remove_unlisted(store, manifest))
    released = release_dead_pins(manifest)
    if released:
        save(store, manifest)
        done.extend("released the instant restore %s of point %d (the overlay no longer uses it)"
                    % (pin["overlay"], pin["point"]) for pin in released)
    return done


def remove_unlisted(store: str, manifest: dict) -> list[str]:
    listed = {chain["dir"]: {name for p in chain["points"] for name in (p["file"], side_path(p["file"]))}
              for chain in manifest["chains"]}
    removed = []
    for entry in sorted(os.listdir(store)):
        path = os.path.join(store, entry)
        if entry in (MANIFEST, LOCK) or not (entry.startswith("chain-") or entry.startswith("." + MANIFEST)):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            if entry not in listed:
                shutil.rmtree(path)
                removed.append("removed %s, a chain no point of the store uses" % entry)
                continue
            for name in sorted(os.listdir(path)):
                if name not in listed[entry]:
                    os.unlink(os.path.join(path, name))
                    removed.append("removed %s/%s, left unsealed by an interrupted run" % (entry, name))
        elif os.path.isfile(path):
            os.unlink(path)  # an interrupted manifest write
    return removed


def pin_alive(manifest: dict, pin: dict) -> bool:
    """The overlay still exists and its backing chain still reads through the pinned layer."""
    if not os.path.exists(pin["overlay"]):
        return False
    try:
        chain = api.image_info(pin["overlay"], force_share=True)
    except api.Qcow2Error:
        return True  # unreadable now: keep the point rather than guess
    return any(api.same_file(info["filename"], pin["layer"]) for info in chain)


def release_dead_pins(manifest: dict) -> list[dict]:
    dead = [pin for pin in manifest["pins"] if not pin_alive(manifest, pin)]
    manifest["pins"] = [pin for pin in manifest["pins"] if pin not in dead]
    return dead
