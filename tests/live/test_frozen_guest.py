# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live points and quiesced snapshots of a guest whose QEMU guest agent answers (tests/live/agent_guest.py):
the guest's file system is frozen through the agent, so what was only in its page cache is on the disk, and the
file system there is clean; the guest is thawed afterwards."""

from __future__ import annotations

import os

from agent_guest import file_system_state, freeze_status, write_guest_file
from live_helpers import run
from module_runner import run_ok

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import load
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import active_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.backup_tracking import LiveTracking
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.domain_backup import backup_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import guest_agent_state

FIRST = "written before point 0, never synced\n"
SECOND = "written before point 1, never synced\n"


def layers(store: str) -> dict[int, str]:
    chain = load(store)["chains"][-1]
    return {point["seq"]: os.path.join(store, chain["dir"], point["file"]) for point in chain["points"]}


def manifest_point(store: str, seq: int) -> dict:
    return [point for chain in load(store)["chains"] for point in chain["points"] if point["seq"] == seq][0]


def test_live_points_of_a_guest_whose_agent_answers_are_frozen(agent_guest):
    g = agent_guest
    store = str(g.directory / "store")
    assert guest_agent_state(g.dom) == "connected"
    write_guest_file(g.dom, "/mnt/first.txt", FIRST)
    frozen_copy = str(g.directory / "frozen.qcow2")

    class KeepingTheFrozenImage(LiveTracking):
        """Copies the frozen image (read only below the overlay) once the store has read it, before the overlay
        is committed back."""

        def _commit_back(self, overlay):
            run("qemu-img", "convert", "-q", "-U", "-O", "qcow2", self.source, frozen_copy)
            super()._commit_back(overlay)

    target, image = backup_disk(g.dom, "vda")
    first = backup.run_backup(backup.Request(store, image), tracking_for=lambda source, manifest, policy:
                              KeepingTheFrozenImage(source, manifest, policy, g.dom, target))
    assert (first["level"], first["point"]["consistency"]) == ("full", "frozen"), first
    assert manifest_point(store, first["point"]["seq"])["consistency"] == "frozen"
    assert freeze_status(g.dom) == "thawed"
    layer = layers(store)[first["point"]["seq"]]
    compared = run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", frozen_copy, layer, check=False)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    state = file_system_state(layer, str(g.directory / "point.raw"), "/first.txt")
    assert (state["text"], state["needs_recovery"], state["clean"]) == (FIRST, False, True), state

    write_guest_file(g.dom, "/mnt/second.txt", SECOND)  # the guest writes again: it was thawed
    second = run_ok("qcow2_backup", {"domain": g.dom.name(), "store": store})
    assert (second["level"], second["point"]["consistency"]) == ("incremental", "frozen"), second
    assert manifest_point(store, second["point"]["seq"])["consistency"] == "frozen"
    assert freeze_status(g.dom) == "thawed"
    state = file_system_state(layers(store)[second["point"]["seq"]], str(g.directory / "point.raw"), "/second.txt")
    assert (state["text"], state["needs_recovery"], state["clean"]) == (SECOND, False, True), state
    for path in layers(store).values():
        assert run("qemu-img", "check", path, check=False).returncode == 0, path


def test_a_quiesced_snapshot_freezes_the_guest_and_a_plain_one_does_not(agent_guest):
    """A plain snapshot first: its image misses the unsynced file and needs journal recovery (what these checks
    see without a freeze); then the quiesced one, through the module."""
    g = agent_guest
    write_guest_file(g.dom, "/mnt/quiesced.txt", "written before the snapshots, never synced\n")
    args = {"path": g.disk, "type": "external", "domain": g.dom.name()}
    raw = str(g.directory / "snapshot.raw")

    plain = run_ok("qcow2_snapshot", dict(args, overlay=str(g.directory / "plain.qcow2")))
    assert plain["domain"]["quiesced"] is False
    state = file_system_state(g.disk, raw, "/quiesced.txt")
    assert (state["text"], state["needs_recovery"]) == (None, True), state
    assert active_commit(g.dom, "vda")["outcome"] == "pivoted"
    os.unlink(str(g.directory / "plain.qcow2"))

    overlay = str(g.directory / "quiesced.qcow2")
    quiesced = run_ok("qcow2_snapshot", dict(args, overlay=overlay, quiesce=True))
    assert quiesced["domain"]["quiesced"] is True and quiesced["domain"]["chain"] == [overlay, g.disk], quiesced
    assert freeze_status(g.dom) == "thawed"
    state = file_system_state(g.disk, raw, "/quiesced.txt")
    assert (state["text"], state["needs_recovery"], state["clean"]) == (
        "written before the snapshots, never synced\n", False, True), state
    assert active_commit(g.dom, "vda")["outcome"] == "pivoted"
    os.unlink(overlay)
