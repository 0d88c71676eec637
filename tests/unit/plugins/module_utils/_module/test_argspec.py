# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import ArgumentSpec, common_argument_spec


def test_update_and_merge_compose_options_and_constraints():
    spec = common_argument_spec().update(dict(a=dict(type="str")), mutually_exclusive=[("a", "path")])
    spec.merge(ArgumentSpec(dict(b=dict(type="int")), required_if=[("a", "x", ("b",))], required_by={"b": "a"}))
    assert set(spec.argument_spec) == {"path", "allowed_backing_dirs", "allow_data_file", "a", "b"}
    assert spec.mutually_exclusive == [("a", "path")]
    assert spec.required_if == [("a", "x", ("b",))]
    assert spec.required_by == {"b": "a"}


def test_unknown_constraint_is_a_programming_error():
    with pytest.raises(TypeError):
        ArgumentSpec().update(required_sometimes=[])


def test_every_module_shares_the_group_options():
    options = common_argument_spec().argument_spec
    assert options["allowed_backing_dirs"] == dict(type="list", elements="path")
    assert options["allow_data_file"] == dict(type="bool", default=False)
    assert options["path"]["required"] is True
