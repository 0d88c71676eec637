# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_args import job_limits
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


def test_job_limits_read_seconds_and_bytes_per_second():
    assert job_limits({"timeout": None, "bandwidth": None}) == (None, None)
    assert job_limits({"timeout": 30, "bandwidth": "100M"}) == (30, 100 << 20)
    assert job_limits({"timeout": 1, "bandwidth": "0"}) == (1, None)  # 0: no limit, as libvirt reads it


@pytest.mark.parametrize("timeout", [0, -5])
def test_a_timeout_that_would_abort_at_once_is_refused(timeout):
    with pytest.raises(InvalidArgumentError, match="positive"):
        job_limits({"timeout": timeout, "bandwidth": None})
