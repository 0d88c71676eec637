# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.sizes import parse_size
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


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
