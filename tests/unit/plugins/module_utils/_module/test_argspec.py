# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import (
    ArgumentSpec,
    common_argument_spec,
    job_limits,
    parse_size,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


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


@pytest.mark.parametrize("value, expected", [
    (None, None),
    (0, 0),
    (1048576, 1048576),
    ("1048576", 1048576),
    ("512", 512),
    ("64K", 65536),
    ("64k", 65536),
    ("512M", 512 << 20),
    ("10G", 10 << 30),
    ("10GB", 10 << 30),
    ("10GiB", 10 << 30),
    ("1.5G", 3 << 29),
    ("2T", 2 << 40),
    (" 3 M ", 3 << 20),
])
def test_sizes_qemu_img_reads(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "lots", "10X", "G", "10Gb", True, -1, "-1G"])
def test_unreadable_sizes_name_the_option(value):
    with pytest.raises(InvalidArgumentError) as err:
        parse_size(value, "cluster_size")
    assert "cluster_size" in str(err.value)


def test_job_limits_read_seconds_and_bytes_per_second():
    assert job_limits({"timeout": None, "bandwidth": None}) == (None, None)
    assert job_limits({"timeout": 30, "bandwidth": "100M"}) == (30, 100 << 20)
    assert job_limits({"timeout": 1, "bandwidth": "0"}) == (1, None)  # 0: no limit, as libvirt reads it


@pytest.mark.parametrize("timeout", [0, -5])
def test_a_timeout_that_would_abort_at_once_is_refused(timeout):
    with pytest.raises(InvalidArgumentError, match="positive"):
        job_limits({"timeout": timeout, "bandwidth": None})
