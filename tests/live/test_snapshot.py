# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""External disk-only snapshots of a running domain."""

from __future__ import annotations

import os

import pytest
from live_helpers import MiB, create_image, domblklist, guest_write, image_info_chain, reads_pattern, stop_gracefully

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import backing_of, disk_runs_on, image_in_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot, guest_agent_state


def test_snapshot_puts_overlay_on_top_with_backing_format(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    overlay = str(image_dir / "overlay1.qcow2")
    assert not disk_runs_on(dom, "vda", overlay)

    result = record_job("snapshot", create_disk_only_snapshot(dom, {"vda": overlay}))

    assert result["changed"] is True
    assert result["backing"] == {"vda": base}
    assert domblklist(dom.name())["vda"] == overlay
    chain = image_info_chain(overlay)
    assert [image["filename"] for image in chain] == [overlay, base]
    assert chain[0]["format"] == "qcow2"
    assert chain[0]["backing-filename-format"] == "qcow2"  # the backing format is recorded in the overlay
    assert chain[0]["full-backing-filename"] == base
    assert disk_runs_on(dom, "vda", overlay, backing=base)
    assert backing_of(dom, "vda", overlay) == base
    assert image_in_chain(dom, "vda", base)
    assert dom.snapshotNum(0) == 0  # no metadata by default

    guest_write(dom, 0x5A, 0, MiB)  # new writes land in the overlay, the base keeps its point in time
    stop_gracefully(dom)
    assert reads_pattern(overlay, 0x5A, 0, MiB)
    assert reads_pattern(base, 0x00, 0, MiB)


def test_snapshot_with_metadata_keeps_a_libvirt_snapshot_object(make_domain, image_dir):
    dom = make_domain(create_image(str(image_dir / "base.qcow2")))
    overlay = str(image_dir / "overlay1.qcow2")

    result = create_disk_only_snapshot(dom, {"vda": overlay}, name="before-upgrade", metadata=True)

    assert result["name"] == "before-upgrade"
    assert dom.snapshotListNames(0) == ["before-upgrade"]
    assert domblklist(dom.name())["vda"] == overlay


def test_snapshot_refuses_an_existing_overlay_path(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    existing = create_image(str(image_dir / "exists.qcow2"))
    dom = make_domain(base)

    with pytest.raises(LiveError, match="already exists"):
        create_disk_only_snapshot(dom, {"vda": existing})
    assert domblklist(dom.name())["vda"] == base


@pytest.mark.parametrize("agent_channel", [False, True], ids=["no-agent-channel", "channel-without-agent"])
def test_quiesce_without_guest_agent_gives_clear_error_and_changes_nothing(make_domain, image_dir, agent_channel):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base, agent_channel=agent_channel)
    overlay = str(image_dir / "overlay1.qcow2")

    with pytest.raises(LiveError) as raised:
        create_disk_only_snapshot(dom, {"vda": overlay}, quiesce=True)

    message = str(raised.value)
    assert "quiesce was requested but the QEMU guest agent of domain '%s' does not answer" % dom.name() in message
    assert "No snapshot was taken" in message
    assert not os.path.exists(overlay)
    assert domblklist(dom.name())["vda"] == base
    assert dom.isActive()
    # What the modules check before asking libvirt (so check mode fails too).
    assert guest_agent_state(dom) == ("disconnected" if agent_channel else None)
