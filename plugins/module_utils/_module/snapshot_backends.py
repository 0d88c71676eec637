# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Which backend takes an external snapshot."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_target import operation_for
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_external import OfflineExternalSnapshot
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_live import LiveExternalSnapshot
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_shutoff import ShutOffExternalSnapshot


def select_external_backend(module, path, overlay, policy):
    """Offline without ``domain``; with it, libvirt while qemu runs the domain, else offline plus its definition."""
    return operation_for(module, policy, OfflineExternalSnapshot, LiveExternalSnapshot, ShutOffExternalSnapshot,
                         path, overlay, policy)
