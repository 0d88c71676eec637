# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Which operation commits: the engine offline, libvirt on a running domain, or the engine plus the
definition of a shut-off domain."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_live import LiveCommit
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_shutoff import ShutOffCommit
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_state import CommitOperation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_target import operation_for
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.engine import chain_policy


def commit_operation(module):
    return operation_for(module, chain_policy(module.params), CommitOperation, LiveCommit, ShutOffCommit)
