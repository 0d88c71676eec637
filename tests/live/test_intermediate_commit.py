# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Commit below the active layer of a running domain, and how the rewritten backing link is named."""

from __future__ import annotations

import pytest
from chain_setup import BASE_DATA, MID_DATA, TOP_DATA, three_deep_chain
from live_helpers import MiB, create_image, guest_write, image_info_chain, reads_pattern, stop_gracefully

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import current_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import image_in_chain, live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.commit import intermediate_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot


def test_commit_mid_into_base_keeps_relative_link_and_all_data(make_domain, image_dir, record_job):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    assert live_chain(dom, "vda") == [chain.top, chain.mid, chain.base]
    guest_write(dom, 0x44, 3 * MiB, MiB)

    result = record_job("intermediate commit", intermediate_commit(dom, "vda", top=chain.mid, base=chain.base, timeout=60))

    assert result["outcome"] == "completed", result["message"]
    assert result["changed"] is True and result["relative_backing"] is True
    assert result["chain_after"] == [chain.top, chain.base]
    assert not image_in_chain(dom, "vda", chain.mid)
    assert current_job(dom, "vda") is None
    top_info = image_info_chain(chain.top)[0]
    assert top_info["backing-filename"] == "base.qcow2"  # relative, as the link it replaced
    assert top_info["backing-filename-format"] == "qcow2"
    assert dom.isActive()

    stop_gracefully(dom)
    assert reads_pattern(chain.base, *BASE_DATA) and reads_pattern(chain.base, *MID_DATA)  # mid's data is in base now
    for data in (BASE_DATA, MID_DATA, TOP_DATA, (0x44, 3 * MiB, MiB)):
        assert reads_pattern(chain.top, *data)  # the guest's view did not change


def test_commit_in_an_absolute_chain_writes_an_absolute_link(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    first, second = str(image_dir / "s1.qcow2"), str(image_dir / "s2.qcow2")
    create_disk_only_snapshot(dom, {"vda": first})  # libvirt records absolute backing names
    guest_write(dom, 0x01, 0, MiB)
    create_disk_only_snapshot(dom, {"vda": second})

    with pytest.raises(LiveError, match="relative"):
        intermediate_commit(dom, "vda", top=first, base=base, relative=True)
    assert live_chain(dom, "vda") == [second, first, base] and current_job(dom, "vda") is None

    result = record_job("intermediate commit (abs)", intermediate_commit(dom, "vda", top=first, timeout=60))

    assert result["outcome"] == "completed", result["message"]
    assert result["relative_backing"] is False and result["base"] == base
    assert image_info_chain(second)[0]["backing-filename"] == base
    stop_gracefully(dom)
    assert reads_pattern(base, 0x01, 0, MiB)


def test_commit_rejects_the_active_image_and_images_outside_the_chain(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    stranger = create_image(str(image_dir / "stranger.qcow2"))
    dom = make_domain(chain.top)

    with pytest.raises(LiveError, match="active commit"):
        intermediate_commit(dom, "vda", top=chain.top)
    with pytest.raises(LiveError, match="is not in the backing chain"):
        intermediate_commit(dom, "vda", top=stranger)
    with pytest.raises(LiveError, match="above top"):
        intermediate_commit(dom, "vda", top=chain.base, base=chain.mid)
    assert live_chain(dom, "vda") == [chain.top, chain.mid, chain.base]
