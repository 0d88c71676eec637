# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A job that does not finish in time is aborted and the domain keeps its original chain."""

from __future__ import annotations

from chain_setup import MID_DATA, TOP_DATA, three_deep_chain
from live_helpers import KiB, MiB, create_image, domblklist, guest_write, reads_pattern, stop_gracefully

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import active_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import current_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.commit import intermediate_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.pull import block_pull
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot

SLOW = 128 * KiB  # bytes per second: 8 MiB of data would take a minute
TIMEOUT = 1.0


def assert_aborted_on_original_chain(dom, result, chain_before):
    assert result["outcome"] == "timeout", result["message"]
    assert result["aborted"] is True and result["changed"] is False and result["failed"] is True
    assert TIMEOUT <= result["duration"] < TIMEOUT + 10
    assert 0 < result["end"] and result["cur"] < result["end"]
    assert "aborted" in result["message"] and "original chain" in result["message"]
    assert result["chain_before"] == chain_before == result["chain_after"]
    assert live_chain(dom, "vda") == chain_before
    assert current_job(dom, "vda") is None
    assert dom.isActive()


def test_active_commit_timeout_aborts_and_keeps_the_overlay_active(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"), size="64M")
    dom = make_domain(base)
    overlay = str(image_dir / "overlay.qcow2")
    create_disk_only_snapshot(dom, {"vda": overlay})
    # More than an active commit copies before its rate limit first applies: a mirror job has up to its
    # buffer (qemu's default 10 MiB) in flight at once, so 8 MiB was sometimes copied, and the job ready,
    # within the second
    guest_write(dom, 0x77, 0, 48 * MiB)

    result = record_job("active commit timeout", active_commit(dom, "vda", base=base, timeout=TIMEOUT, bandwidth=SLOW))

    assert_aborted_on_original_chain(dom, result, [overlay, base])
    assert domblklist(dom.name())["vda"] == overlay
    guest_write(dom, 0x78, 0, MiB)  # the guest still writes through the overlay
    stop_gracefully(dom)
    assert reads_pattern(overlay, 0x78, 0, MiB) and reads_pattern(overlay, 0x77, MiB, 47 * MiB)


def test_intermediate_commit_timeout_aborts_and_keeps_the_chain(make_domain, image_dir, record_job):
    chain = three_deep_chain(image_dir, mid_extra=8 * MiB)
    dom = make_domain(chain.top)

    result = record_job("commit timeout", intermediate_commit(dom, "vda", top=chain.mid, timeout=TIMEOUT, bandwidth=SLOW))

    assert_aborted_on_original_chain(dom, result, [chain.top, chain.mid, chain.base])
    stop_gracefully(dom)
    assert reads_pattern(chain.top, *MID_DATA) and reads_pattern(chain.top, *TOP_DATA)


def test_pull_timeout_aborts_and_keeps_the_chain(make_domain, image_dir, record_job):
    chain = three_deep_chain(image_dir, mid_extra=8 * MiB)
    dom = make_domain(chain.top)

    result = record_job("pull timeout", block_pull(dom, "vda", timeout=TIMEOUT, bandwidth=SLOW))

    assert_aborted_on_original_chain(dom, result, [chain.top, chain.mid, chain.base])
