# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Block pull into the active image of a running domain."""

from __future__ import annotations

from chain_setup import BASE_DATA, MID_DATA, TOP_DATA, three_deep_chain
from live_helpers import MiB, depth_at, guest_flush, guest_write, image_info_chain, reads_pattern, stop_gracefully

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import backing_of, live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.pull import block_pull


def test_pull_from_a_base_then_everything(make_domain, image_dir, record_job):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    guest_write(dom, 0x44, 3 * MiB, MiB)

    result = record_job("pull above base", block_pull(dom, "vda", base=chain.base, timeout=60))

    assert result["outcome"] == "completed", result["message"]
    assert result["relative_backing"] is True
    assert live_chain(dom, "vda") == [chain.top, chain.base]
    assert backing_of(dom, "vda", chain.top) == chain.base
    info = image_info_chain(chain.top)[0]
    assert info["backing-filename"] == "base.qcow2" and info["backing-filename-format"] == "qcow2"
    guest_flush(dom)  # qemu caches qcow2 metadata; qemu-img map -U reads the file
    assert depth_at(chain.top, MID_DATA[1]) == 0  # mid's data now lives in top
    assert depth_at(chain.top, BASE_DATA[1]) == 1  # base's data stays in base

    again = block_pull(dom, "vda", base=chain.base)
    assert again["outcome"] == "unchanged" and again["changed"] is False

    result = record_job("pull everything", block_pull(dom, "vda", timeout=60))

    assert result["outcome"] == "completed", result["message"]
    assert live_chain(dom, "vda") == [chain.top]
    assert "backing-filename" not in image_info_chain(chain.top)[0]
    assert block_pull(dom, "vda")["outcome"] == "unchanged"

    stop_gracefully(dom)
    for data in (BASE_DATA, MID_DATA, TOP_DATA, (0x44, 3 * MiB, MiB)):
        assert reads_pattern(chain.top, *data)  # top alone holds everything
    assert reads_pattern(chain.mid, *MID_DATA)  # pulled-from images stay valid
