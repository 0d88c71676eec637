# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Options of the modules that can change the chain of a libvirt domain's disk (doc fragment _domain)."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import DEFAULT_URI
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import ArgumentSpec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.sizes import parse_size
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


def domain_argument_spec():
    """domain, uri and disk: which domain's disk the task is about (doc fragment _domain)."""
    return ArgumentSpec(
        dict(
            domain=dict(type="str"),
            uri=dict(type="str", default=DEFAULT_URI),
            disk=dict(type="str"),
        ),
        required_by={"disk": "domain"},
    )


def block_job_argument_spec():
    """timeout and bandwidth of the libvirt block job that does the work on a running domain
    (doc fragment _domain.BLOCK_JOB)."""
    return ArgumentSpec(
        dict(
            timeout=dict(type="int"),
            bandwidth=dict(type="str"),
        ),
        required_by={"timeout": "domain", "bandwidth": "domain"},
    )


def job_limits(params):
    """(timeout in seconds or None, bandwidth in bytes per second or None) for a block job."""
    timeout = params["timeout"]
    if timeout is not None and timeout <= 0:
        raise InvalidArgumentError("timeout must be a positive number of seconds (leave it unset to wait as long as the "
                                   "job takes), not %d" % timeout)
    return timeout, parse_size(params["bandwidth"], "bandwidth") or None
