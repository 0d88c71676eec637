# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: flatten_plan
short_description: Plan how the chain_flatten role brings deep qcow2 chains down to a target depth
version_added: "0.1.0"
author:
  - backingchain.qcow2 contributors (@backingchain)
description:
  - The planning step of the R(backingchain.qcow2.chain_flatten role,ansible_collections.backingchain.qcow2.chain_flatten_role),
    as a filter so that it can be tested on its own. It reads only what M(backingchain.qcow2.qcow2_info) returned and
    changes nothing.
  - One row per image read. An image that could not be read is V(skipped) when it is not a qcow2 image at all (a raw
    disk has no chain to flatten; RV(backingchain.qcow2.qcow2_info#module:image_format=raw)) and V(failed) otherwise.
  - A chain deeper than O(max_depth) (the image itself counted) drops the layers right below the image until it is
    O(target_depth) deep. V(commit) writes them into the image they then sit on, V(pull) copies them into the image
    itself. Commit is chosen only when no other chain read on the host uses that base without going through the first
    dropped layer, O(strategy) allows it and O(target_depth) is not 1.
  - A dropped layer is listed as removable unless another chain read on the host or a libvirt domain disk uses it.
positional: _input
options:
  _input:
    description:
      - The registered results of a M(backingchain.qcow2.qcow2_info) loop over the candidate images (its C(results)),
        each with C(item), the image's path.
    type: list
    elements: dict
    required: true
  tops:
    description:
      - The paths of the images that are the top of a chain (no other image read names them as its backing file). Only
        their chains are planned; the other readable images are layers.
    type: list
    elements: str
    required: true
  max_depth:
    description: Chains deeper than this are flattened.
    type: int
    required: true
  target_depth:
    description: The depth a flattened chain is brought to (1 makes the image standalone).
    type: int
    required: true
  strategy:
    description: V(auto) commits when the base is safe to write and pulls otherwise; V(commit) never pulls; V(pull) never commits.
    type: str
    choices: [auto, commit, pull]
    default: auto
  remove_dropped:
    description: List the dropped layers nothing else uses as removable.
    type: bool
    default: true
  host:
    description: The host the images are on, copied into each row.
    type: str
    default: ""
  domain_disks:
    description:
      - The file disks of libvirt domains on the host, each a dictionary with C(domain), C(disk), C(file) and C(running).
    type: list
    elements: dict
    default: []
  users:
    description:
      - The registered results of a M(backingchain.qcow2.qcow2_info) loop with O(backingchain.qcow2.qcow2_info#module:users=true)
        over the tops (each with C(item.item), the top's path, and C(users)). A top that a domain uses as its active image
        (depth 0) is changed through that domain.
    type: list
    elements: dict
    default: []
  report_keys:
    description: The keys of a chain entry the rows keep in C(chain_before), C(chain_after) and C(predicted_after).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Plan the chains read into chain_info
  ansible.builtin.set_fact:
    plan: >-
      {{ chain_info.results | backingchain.qcow2.flatten_plan(tops=['/srv/vm1.qcow2'], max_depth=3, target_depth=2,
                                                               report_keys=['filename', 'format', 'virtual_size']) }}
"""

RETURN = r"""
_value:
  description:
    - The rows, first the images that could not be read, then one per top in the order of O(tops).
    - Each row has C(host), C(image), C(domain), C(disk), C(live), C(depth_before), C(depth_after), C(method), C(base),
      C(dropped), C(removed), C(bytes_moved), C(bytes_estimated), C(duration), C(result) (V(unchanged), V(skipped),
      V(failed) or V(pending)), C(message), C(chain_before) and C(chain_after). A chain's row also has C(top) (the first
      layer dropped), C(base_format), C(backing_name) (the base as the image records it, relative when it lives in the
      image's directory), C(shared), C(removable), C(top_users) (C(DOMAIN/DISK) of the domain disks using the image),
      C(pull_estimate) (the dropped layers' bytes on disk) and C(predicted_after) (the chain once flattened, without
      sizes on disk).
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleFilterError

STRATEGIES = ("auto", "commit", "pull")


def _first_disk(domain_disks, path):
    return next((disk for disk in domain_disks if disk.get("file") == path), {})


def _where(disk):
    """The row fields that say which domain disk (if any) the image is."""
    return {"domain": disk.get("domain"), "disk": disk.get("disk"), "live": disk.get("running", False)}


def _keep(entry, keys):
    return dict((key, value) for key, value in entry.items() if key in keys)


def active_image_disks(users):
    """Domain disks whose active image is a top, from qcow2_info users results (later results first, as they are
    looked up first), and each top's users."""
    disks, by_top = [], {}
    for result in users:
        if "users" not in result:
            continue
        top = result["item"]["item"]
        found = [{"domain": use["domain"], "disk": use["disk"], "file": top, "running": use["state"] == "running"}
                 for use in result["users"] if use["depth"] == 0]
        disks = found + disks
        by_top[top] = result["users"]
    return disks, by_top


def unreadable_row(result, domain_disks, host):
    """The row of an image qcow2_info could not read: a raw image is skipped (no chain), anything else failed."""
    row = {"host": host, "image": result["item"]}
    row.update(_where(_first_disk(domain_disks, result["item"])))
    row.update(depth_before=None, depth_after=None, method=None, base=None, bytes_moved=0, bytes_estimated=False,
               duration=0, result="skipped" if result.get("image_format") == "raw" else "failed",
               message=result.get("msg", "could not be read"), dropped=[], removed=[], chain_before=[], chain_after=[])
    return row


class _Settings:
    def __init__(self, max_depth, target_depth, strategy, remove_dropped, host, report_keys):
        if strategy not in STRATEGIES:
            raise AnsibleFilterError("flatten_plan: strategy must be one of %s, not %r" % (", ".join(STRATEGIES), strategy))
        self.max_depth = int(max_depth)
        self.target_depth = int(target_depth)
        self.strategy = strategy
        self.remove_dropped = bool(remove_dropped)
        self.host = host
        self.report_keys = list(report_keys)


def chain_row(top, others, domain_disks, users, settings):
    """The row of one top: unchanged, skipped (strategy commit cannot commit) or pending, with what to do."""
    path, chain = top["item"], top["chain"]
    depth = int(top["chain_depth"])
    deep = depth > settings.max_depth
    drop = depth - settings.target_depth
    standalone = settings.target_depth == 1
    files = [entry["filename"] for entry in chain]
    first = files[1] if deep else ""
    base = files[drop + 1] if deep and not standalone else ""
    base_format = chain[drop + 1]["format"] if base else "qcow2"
    # recorded relative to the image's directory when the base lives there, else absolute
    backing_name = os.path.basename(base) if base and os.path.dirname(base) == os.path.dirname(path) else base
    shared = base != "" and any(base in other and first not in other for other in others)
    method = "pull" if standalone or settings.strategy == "pull" or shared else "commit"
    refused = settings.strategy == "commit" and method != "commit"
    dropped = files[1:drop + 1] if deep else []
    used_elsewhere = set(name for other in others for name in other) | set(disk.get("file") for disk in domain_disks)
    compact = [_keep(entry, settings.report_keys) for entry in chain]
    top_after = dict((key, value) for key, value in chain[0].items() if "backing" not in key)
    if not standalone:
        top_after.update(backing_filename=backing_name, full_backing_filename=base, backing_filename_format=base_format)
    # sizes on disk after the change are not known before it: left out
    predicted_keys = [key for key in settings.report_keys if key != "actual_size"]
    top_users = users.get(path, [])
    if not deep:
        message = "depth %d is within the maximum of %d" % (depth, settings.max_depth)
    elif refused:
        message = "strategy commit never writes into %s: other images read it without going through %s" % (base, first)
    else:
        message = ""
    row = {"host": settings.host, "image": path}
    row.update(_where(_first_disk(domain_disks, path)))
    row.update(
        depth_before=depth,
        depth_after=depth,
        method=method if deep and not refused else None,
        top=first or None,
        base=base or None,
        base_format=base_format,
        backing_name=backing_name,
        shared=shared,
        dropped=dropped,
        removable=[name for name in dropped if name not in used_elsewhere] if settings.remove_dropped else [],
        removed=[],
        # the domain disks that use the image: dropped layers they use through it may still be deleted
        top_users=["%s/%s" % (use["domain"], use["disk"]) for use in top_users],
        # what a pull copies at most, for a running domain's pull (qcow2_rebase does not plan it in check mode)
        pull_estimate=sum(entry.get("actual_size", 0) for entry in chain[1:drop + 1]) if deep else 0,
        bytes_moved=0,
        bytes_estimated=False,
        duration=0,
        result="unchanged" if not deep else ("skipped" if refused else "pending"),
        message=message,
        chain_before=compact,
        chain_after=compact,
        predicted_after=[_keep(entry, predicted_keys) for entry in [top_after] + chain[drop + 1:]],
    )
    return row


def flatten_plan(results, tops, max_depth, target_depth, report_keys, strategy="auto", remove_dropped=True, host="",
                 domain_disks=None, users=None):
    """The chain_flatten plan (see DOCUMENTATION)."""
    settings = _Settings(max_depth, target_depth, strategy, remove_dropped, host, report_keys)
    found, by_top = active_image_disks(users or [])
    disks = found + list(domain_disks or [])
    readable = dict((result["item"], result) for result in results if "chain" in result)
    missing = [path for path in tops if path not in readable]
    if missing:
        raise AnsibleFilterError("flatten_plan: tops %s are not among the readable results" % ", ".join(missing))
    chains = dict((path, [entry["filename"] for entry in readable[path]["chain"]]) for path in tops)
    rows = [unreadable_row(result, disks, host) for result in results if "chain" not in result]
    for path in tops:
        others = [files for other, files in chains.items() if other != path]
        rows.append(chain_row(readable[path], others, disks, by_top, settings))
    return rows


class FilterModule:
    """backingchain.qcow2 filters."""

    def filters(self):
        return {"flatten_plan": flatten_plan}
