# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Composable argument specs: an argument_spec with its constraints, merged piece by piece."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

_CONSTRAINTS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")


class ArgumentSpec:
    """An argument_spec plus the constraint lists AnsibleModule takes."""

    def __init__(self, argument_spec=None, mutually_exclusive=None, required_together=None, required_one_of=None,
                 required_if=None, required_by=None):
        self.argument_spec = dict(argument_spec or {})
        self.mutually_exclusive = list(mutually_exclusive or [])
        self.required_together = list(required_together or [])
        self.required_one_of = list(required_one_of or [])
        self.required_if = list(required_if or [])
        self.required_by = dict(required_by or {})

    def update(self, argument_spec=None, **constraints):
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

    def merge(self, other):
        """Add everything another ArgumentSpec holds; returns self."""
        return self.update(other.argument_spec, mutually_exclusive=other.mutually_exclusive,
                           required_together=other.required_together, required_one_of=other.required_one_of,
                           required_if=other.required_if, required_by=other.required_by)

    def create_ansible_module(self, **kwargs):
        return AnsibleModule(
            argument_spec=self.argument_spec,
            mutually_exclusive=self.mutually_exclusive,
            required_together=self.required_together,
            required_one_of=self.required_one_of,
            required_if=self.required_if,
            required_by=self.required_by,
            **kwargs
        )


def common_argument_spec():
    """Options of every module: the image (path) and the chain policy (doc fragment _engine).

    allowed_backing_dirs and allow_data_file are the action group's shared options: module_defaults for
    group/backingchain.qcow2.qcow2 may set them, so every module of the group must accept them.
    """
    return ArgumentSpec(dict(
        path=dict(type="path", required=True),
        allowed_backing_dirs=dict(type="list", elements="path"),
        allow_data_file=dict(type="bool", default=False),
    ))
