# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Keeping a shut-off domain's definition in step with what the engine did to its disk's images.

libvirt trusts a <backingStore> in the inactive XML over the image headers, so after any change the
engine makes, update_inactive_disk points the disk at its (new) top and drops <backingStore>. When
the engine changes nothing, the definition is only rewritten if it is wrong: another source or
format, or a <backingStore> (libvirt writes one after live snapshots and commits) that disagrees
with the headers. One that agrees is left alone, so repeating a task reports no change.
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.inactive_xml import update_inactive_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.paths import same_file


def backing_store_agrees(model, chain, formats):
    """True if the <backingStore> elements of the inactive XML disk ``model`` (if any) name the images
    below the top of ``chain`` with their ``formats``. An unterminated list may stop early: libvirt
    probes the rest from the headers."""
    listed = model.backing
    below = list(zip(chain[1:], formats[1:]))
    if len(listed) > len(below) or (model.chain_terminated and len(listed) != len(below)):
        return False
    return all(same_file(image.path, path) and image.format == fmt for image, (path, fmt) in zip(listed, below))


class DefinitionSync:
    """plan() says whether the definition must change and how; apply() redefines the domain."""

    def __init__(self, domain, disk):
        self.domain = domain
        self.disk = disk
        self.top = None
        self.format = None
        self.changed = False
        self.before = {}
        self.after = {}

    def plan(self, top, top_format, images_change, chain_after=None, formats_after=None):
        """top: the image the disk must start on; images_change: the engine will write the chain, so any
        <backingStore> goes. Otherwise chain_after/formats_after (the headers' chain from top) decide
        whether an existing <backingStore> is still right."""
        self.top, self.format = top, top_format
        predicted = update_inactive_disk(self.domain.conn, self.domain.dom, self.disk.target, top, top_format,
                                         check_mode=True)
        self.before, self.after = predicted["before"], predicted["after"]
        self.changed = predicted["changed"]
        if self.changed and not images_change:
            source_right = same_file(self.before["source"], top) and self.before["format"] == top_format
            if source_right and backing_store_agrees(self.disk.model, chain_after, formats_after):
                self.changed = False
                self.after = dict(self.before)
        return self.changed

    def apply(self):
        if self.changed:
            done = update_inactive_disk(self.domain.conn, self.domain.dom, self.disk.target, self.top, self.format)
            self.after = done["after"]
