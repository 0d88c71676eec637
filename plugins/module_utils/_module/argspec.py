# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Argument specs and option values the modules share.

Composable specs (an argument_spec with its constraints, merged piece by piece) for the options that doc
fragments document for several modules; each module declares its own options beside its DOCUMENTATION.
Also the values those options take that need more than Ansible's types: sizes and block job limits.
"""

from __future__ import annotations

import re
import typing as t

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.formatters import human_to_bytes

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import InvalidArgumentError

_CONSTRAINTS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")

# human_to_bytes knows K/KB..E/EB; qemu-img users also write KiB..EiB, which mean the same here.
_IEC = re.compile(r"^\s*([0-9.]+)\s*([KMGTPE])iB\s*$", re.IGNORECASE)


class ArgumentSpec:
    """An argument_spec plus the constraint lists AnsibleModule takes."""

    def __init__(self, argument_spec: dict | None = None, mutually_exclusive: list | None = None,
                 required_together: list | None = None, required_one_of: list | None = None,
                 required_if: list | None = None, required_by: dict | None = None) -> None:
        self.argument_spec = dict(argument_spec or {})
        self.mutually_exclusive = list(mutually_exclusive or [])
        self.required_together = list(required_together or [])
        self.required_one_of = list(required_one_of or [])
        self.required_if = list(required_if or [])
        self.required_by = dict(required_by or {})

    def update(self, argument_spec: dict | None = None, **constraints: t.Any) -> ArgumentSpec:
        """Add options and constraints; returns self so calls chain."""
        self.argument_spec.update(argument_spec or {})
        for name, value in constraints.items():
            if name not in _CONSTRAINTS:
                raise TypeError("unknown constraint %r" % name)
            if name == "required_by":
                self.required_by.update(value)
            else:
                getattr(self, name).extend(value)
        return self

    def merge(self, other: ArgumentSpec) -> ArgumentSpec:
        """Add everything another ArgumentSpec holds; returns self."""
        return self.update(other.argument_spec, mutually_exclusive=other.mutually_exclusive,
                           required_together=other.required_together, required_one_of=other.required_one_of,
                           required_if=other.required_if, required_by=other.required_by)

    def create_ansible_module(self, **kwargs: t.Any) -> AnsibleModule:
        return AnsibleModule(
            argument_spec=self.argument_spec,
            mutually_exclusive=self.mutually_exclusive,
            required_together=self.required_together,
            required_one_of=self.required_one_of,
            required_if=self.required_if,
            required_by=self.required_by,
            **kwargs
        )


def policy_argument_spec() -> ArgumentSpec:
    """The chain policy (doc fragment _engine): allowed_backing_dirs and allow_data_file are the action group's
    shared options: module_defaults for group/backingchain.qcow2.qcow2 may set them, so every module of the group
    must accept them."""
    return ArgumentSpec(dict(
        allowed_backing_dirs=dict(type="list", elements="path"),
        allow_data_file=dict(type="bool", default=False),
    ))


def common_argument_spec() -> ArgumentSpec:
    """Options of every module about one image: the image (path) and the chain policy."""
    return policy_argument_spec().update(dict(path=dict(type="path", required=True)))


# The libvirt connection a task with domain opens (the doc fragment _domain documents this default).
DEFAULT_URI = "qemu:///system"


def domain_argument_spec() -> ArgumentSpec:
    """domain, uri and disk: which domain's disk the task is about (doc fragment _domain)."""
    return ArgumentSpec(
        dict(
            domain=dict(type="str"),
            uri=dict(type="str", default=DEFAULT_URI),
            disk=dict(type="str"),
        ),
        required_by={"disk": "domain"},
    )


def block_job_argument_spec() -> ArgumentSpec:
    """timeout and bandwidth of the libvirt block job that does the work on a running domain
    (doc fragment _domain.BLOCK_JOB)."""
    return ArgumentSpec(
        dict(
            timeout=dict(type="int"),
            bandwidth=dict(type="str"),
        ),
        required_by={"timeout": "domain", "bandwidth": "domain"},
    )


def parse_size(value: t.Any, option: str = "size") -> int | None:
    """Bytes as an int from bytes or a size as users write it (10G, 512M, 1.5T, 4KiB): K, M, G, T, P, E are
    powers of 1024 as in qemu-img. None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgumentError("%s must be a number of bytes or a size like 10G, not %r" % (option, value))
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip()
        match = _IEC.match(text)
        if match:
            text = match.group(1) + match.group(2)
        try:
            size = human_to_bytes(text)
        except ValueError:
            raise InvalidArgumentError("%s: cannot read %r as a size; give bytes or a number with K, M, G, T, P or E "
                                       "(powers of 1024, as qemu-img reads them)" % (option, value)) from None
    if size < 0:
        raise InvalidArgumentError("%s must not be negative (got %r)" % (option, value))
    return size


def job_limits(params: dict) -> tuple[int | None, int | None]:
    """(timeout in seconds or None, bandwidth in bytes per second or None) for a block job."""
    timeout = params["timeout"]
    if timeout is not None and timeout <= 0:
        raise InvalidArgumentError("timeout must be a positive number of seconds (leave it unset to wait as long as the "
                                   "job takes), not %d" % timeout)
    return timeout, parse_size(params["bandwidth"], "bandwidth") or None
