# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backup points of a running domain's disk (libvirt checkpoints read from the frozen image below a temporary
overlay) and of the same disk while the domain is shut off, with guest writes (HMP qemu-io) between points.

Every point, read from the store, must compare identical (qemu-img compare) to the disk as it was when frozen:
a reference image gets the same writes as the guest, and is copied at each point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from live_helpers import MiB, REPO, create_image, guest_flush, guest_write, run, start_domain, stop_gracefully, write_offline
from module_runner import run_ok

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import all_points, bitmap_name, load
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import active_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.backup_tracking import LiveTracking, overlay_path
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.checkpoints import checkpoint_xml
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.domain_backup import (
    backup_disk,
    plan_domain_backup,
    run_domain_backup,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot

FOREIGN = "someone-elses-checkpoint"


class Workload:
    """The domain's disk and a reference image that gets every write the guest makes; a copy of the reference
    is kept at each point for the comparison."""

    def __init__(self, directory: Path, dom) -> None:
        self.directory = directory
        self.dom = dom
        self.reference = create_image(str(directory / "reference.qcow2"))
        self.store = str(directory / "store")
        self.frozen: dict[int, str] = {}

    def guest_writes(self, *writes: tuple[int, int, int]) -> None:
        for pattern, offset, length in writes:
            if self.dom.isActive():
                guest_write(self.dom, pattern, offset, length)
            else:
                write_offline(self.disk(), pattern, offset, length)
            write_offline(self.reference, pattern, offset, length)
        if self.dom.isActive():
            guest_flush(self.dom)

    def disk(self) -> str:
        return str(self.directory / "disk.qcow2")

    def backup(self, **options) -> dict:
        """A point, the disk found as the module finds it (below a killed run's overlay too)."""
        target, image = backup_disk(self.dom, "vda")
        assert image == self.disk()
        done = run_domain_backup(self.dom, target, backup.Request(self.store, image, **options))
        seq = done["point"]["seq"]
        self.frozen[seq] = shutil.copy(self.reference, str(self.directory / ("frozen-%d.qcow2" % seq)))
        return done

    def plan(self, **options) -> backup.BackupPlan:
        return plan_domain_backup(self.dom, "vda", backup.Request(self.store, self.disk(), **options))

    def check_every_point(self) -> None:
        """Each sealed point, read through the store's chain, is the disk as it was when its point was frozen;
        every layer is clean."""
        manifest = load(self.store)
        for chain in manifest["chains"]:
            for point in chain["points"]:
                layer = os.path.join(self.store, chain["dir"], point["file"])
                compared = run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", self.frozen[point["seq"]], layer,
                               check=False)
                assert compared.returncode == 0, (point["seq"], compared.stdout, compared.stderr)
                assert run("qemu-img", "check", layer, check=False).returncode == 0, point["seq"]

    def own_checkpoints(self) -> list[str]:
        store_id = load(self.store)["store_id"]
        return sorted(c.getName() for c in self.dom.listAllCheckpoints(0) if ("-%s-" % store_id) in c.getName())

    def leftovers(self) -> list[str]:
        return sorted(name for name in os.listdir(self.directory) if name.startswith(".disk.qcow2."))


def foreign_checkpoint(dom) -> None:
    dom.checkpointCreateXML("<domaincheckpoint><name>%s</name><disks><disk name='vda' checkpoint='bitmap'/></disks>"
                            "</domaincheckpoint>" % FOREIGN, 0)


def bitmaps_on_disk(path: str) -> list[str]:
    info = json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)
    return sorted(b["name"] for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", []))


def wait_until(done, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "gave up waiting after %.0f s" % seconds
        time.sleep(0.05)


def restart_libvirtd() -> None:
    """Stop the libvirtd this session started (never someone else's) and start it again; domains keep running."""
    state_dir = os.environ.get("BCQ_LIVE_STATE_DIR", "/run/backingchain-live")
    recorded = Path(state_dir, "libvirtd.pid")
    if not recorded.exists():
        pytest.fail("libvirtd was not started by scripts/libvirt-up.sh in this session: not restarting it")
    pid = int(recorded.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path("/proc/%d" % pid).exists())
    recorded.unlink()
    up = subprocess.run(["bash", str(REPO / "scripts/libvirt-up.sh")], capture_output=True, text=True, timeout=300,
                        check=False)
    assert up.returncode == 0, up.stderr


@pytest.fixture
def workload(make_domain, image_dir):
    disk = create_image(str(image_dir / "disk.qcow2"))
    dom = make_domain(disk)
    foreign_checkpoint(dom)
    return Workload(image_dir, dom)


def test_live_points_continue_through_user_snapshots_restarts_and_offline_points(workload, conn):
    w = workload
    w.guest_writes((0x11, 0, 4 * MiB), (0x12, 10 * MiB, 1 * MiB))
    full = w.backup()
    assert (full["level"], full["point"]["consistency"]) == ("full", "crash"), full
    assert full["reason"] == "the store holds no chain yet"

    # an increment after a full: check mode predicts it, the run copies only the written clusters
    w.guest_writes((0x21, 1 * MiB, 64 * 1024), (0x22, 20 * MiB, 128 * 1024))
    plan = w.plan()
    assert (plan.level, plan.bytes_to_copy) == ("incremental", 192 * 1024), plan
    inc = w.backup()
    assert (inc["level"], inc["point"]["bytes_copied"]) == ("incremental", 192 * 1024), inc
    assert inc["bitmaps_removed"] == [full["point"]["bitmap"]]

    # after an external snapshot and an active commit made by the user (writes while on the user's overlay)
    create_disk_only_snapshot(w.dom, {"vda": str(w.directory / "user-overlay.qcow2")})
    w.guest_writes((0x31, 2 * MiB, 64 * 1024))
    assert active_commit(w.dom, "vda")["outcome"] == "pivoted"
    w.guest_writes((0x32, 3 * MiB, 64 * 1024))
    after_user = w.backup()
    assert (after_user["level"], after_user["point"]["bytes_copied"]) == ("incremental", 128 * 1024), after_user

    # after a libvirtd restart (the domain keeps running; its checkpoints are in libvirt's state)
    restart_libvirtd()
    conn.reopen()
    w.dom = conn.lookupByName(w.dom.name())
    w.guest_writes((0x41, 4 * MiB, 64 * 1024))
    after_restart = w.backup()
    assert (after_restart["level"], after_restart["point"]["bytes_copied"]) == ("incremental", 64 * 1024)

    # after the domain is stopped and started
    stop_gracefully(w.dom)
    start_domain(w.dom)
    w.guest_writes((0x51, 5 * MiB, 64 * 1024))
    after_start = w.backup()
    assert (after_start["level"], after_start["point"]["bytes_copied"]) == ("incremental", 64 * 1024)

    # shut off: an offline point (the engine rotates the bitmap, libvirt's metadata follows by redefine) ...
    stop_gracefully(w.dom)
    w.guest_writes((0x61, 6 * MiB, 64 * 1024))
    offline = w.backup()
    assert (offline["level"], offline["point"]["consistency"]) == ("incremental", "offline"), offline
    assert offline["checkpoints"] == {"redefined": [offline["point"]["bitmap"]],
                                      "dropped": [after_start["point"]["bitmap"]]}
    # ... then a live point after the next start continues the same chain
    start_domain(w.dom)
    w.guest_writes((0x71, 7 * MiB, 64 * 1024))
    live_again = w.backup()
    assert (live_again["level"], live_again["point"]["bytes_copied"]) == ("incremental", 64 * 1024), live_again

    manifest = load(w.store)
    assert len(manifest["chains"]) == 1 and len(all_points(manifest)) == 7
    w.check_every_point()
    assert w.own_checkpoints() == [live_again["point"]["bitmap"]]
    assert FOREIGN in [c.getName() for c in w.dom.listAllCheckpoints(0)]
    assert w.leftovers() == []


def test_a_killed_qemu_leaves_the_bitmap_in_use_and_a_full_follows(workload):
    w = workload
    w.guest_writes((0x11, 0, 2 * MiB))
    first = w.backup()
    w.guest_writes((0x12, 3 * MiB, 64 * 1024))
    guest_flush(w.dom)
    pid = int(Path("/run/libvirt/qemu/%s.pid" % w.dom.name()).read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not w.dom.isActive())
    start_domain(w.dom)
    w.guest_writes((0x13, 5 * MiB, 64 * 1024))

    tracking = first["point"]["bitmap"]
    plan = w.plan()
    assert plan.level == "full" and tracking in plan.reason and "in use" in plan.reason, plan
    done = w.backup()
    assert done["level"] == "full" and "left in use" in done["reason"] and tracking in done["reason"], done
    assert load(w.store)["chains"][-1]["points"][0]["reason"] == done["reason"]
    assert tracking in done["bitmaps_removed"]
    # the chain goes on from the new full
    w.guest_writes((0x14, 6 * MiB, 64 * 1024))
    assert w.backup()["level"] == "incremental"
    w.check_every_point()
    assert len(w.own_checkpoints()) == 1 and FOREIGN in [c.getName() for c in w.dom.listAllCheckpoints(0)]
    stop_gracefully(w.dom)  # the stale bitmap left in use went with its checkpoint
    assert bitmaps_on_disk(w.disk()) == sorted(w.own_checkpoints() + [FOREIGN])
    assert w.leftovers() == []


def test_the_module_with_domain_predicts_and_takes_a_point(workload):
    w = workload
    w.guest_writes((0x11, 0, 1 * MiB))
    args = {"domain": w.dom.name(), "store": w.store}
    check = run_ok("qcow2_backup", args, check=True, in_process=True)
    assert (check["level"], check["changed"]) == ("full", True) and not os.path.exists(w.store)
    done = run_ok("qcow2_backup", args)
    assert done["level"] == "full" and done["domain"]["disk"] == "vda" and done["point"]["consistency"] == "crash"
    w.frozen[done["seq"]] = shutil.copy(w.reference, str(w.directory / "frozen-0.qcow2"))
    w.guest_writes((0x12, 8 * MiB, 64 * 1024))
    args["compress"] = True  # the increment of a running domain, compressed over a plain full
    check = run_ok("qcow2_backup", args, check=True, in_process=True)
    done = run_ok("qcow2_backup", args)
    assert (check["level"], check["bytes_to_copy"]) == (done["level"], done["bytes_to_copy"]) == ("incremental", 65536)
    assert done["point"]["compressed"]
    report = json.loads(run("qemu-img", "check", "--output=json", done["layer"]).stdout)
    assert report.get("compressed-clusters") == 1
    w.frozen[done["seq"]] = shutil.copy(w.reference, str(w.directory / "frozen-1.qcow2"))
    w.check_every_point()


def test_a_backup_killed_before_its_commit_is_finished_by_the_next_run(workload):
    """A run killed after its checkpoint and overlay (the domain still runs on the overlay): the next run commits
    the overlay back, drops the checkpoint, and takes its point from the disk's image."""
    w = workload
    w.guest_writes((0x11, 0, 1 * MiB))
    first = w.backup()
    killed = bitmap_name(load(w.store), first["point"]["seq"] + 1)
    w.dom.checkpointCreateXML(checkpoint_xml(w.dom, killed, "vda"), 0)
    create_disk_only_snapshot(w.dom, {"vda": overlay_path(w.disk(), killed)})
    w.guest_writes((0x12, 2 * MiB, 64 * 1024))  # into the overlay
    assert w.leftovers() == [os.path.basename(overlay_path(w.disk(), killed))]
    done = w.backup()
    assert done["level"] == "incremental" and done["point"]["bytes_copied"] == 64 * 1024, done
    assert done["bitmaps_removed"][0] == killed
    assert select_disk(domain_disks(w.dom), target="vda").chain_paths() == [w.disk()]
    assert w.own_checkpoints() == [done["point"]["bitmap"]] and w.leftovers() == []

    # killed again, then the domain shut off on the overlay: refused with what to do, nothing changed
    killed = bitmap_name(load(w.store), done["point"]["seq"] + 1)
    w.dom.checkpointCreateXML(checkpoint_xml(w.dom, killed, "vda"), 0)
    create_disk_only_snapshot(w.dom, {"vda": overlay_path(w.disk(), killed)})
    w.guest_writes((0x13, 3 * MiB, 64 * 1024))
    stop_gracefully(w.dom)
    with pytest.raises(LiveError, match="Start the domain: the next backup commits the overlay back first"):
        w.backup()
    assert len(all_points(load(w.store))) == 2
    start_domain(w.dom)
    again = w.backup()
    assert again["level"] == "incremental" and again["point"]["bytes_copied"] == 64 * 1024, again

    # an overlay file a run left after its commit (killed before deleting it) is deleted, not in the way
    stale = overlay_path(w.disk(), bitmap_name(load(w.store), again["point"]["seq"] + 1))
    create_image(stale)
    assert w.backup()["level"] == "incremental" and w.leftovers() == []
    w.check_every_point()


def test_a_deleted_checkpoint_or_a_replaced_disk_makes_a_full(workload):
    w = workload
    w.guest_writes((0x11, 0, 1 * MiB))
    first = w.backup()
    w.dom.checkpointLookupByName(first["point"]["bitmap"], 0).delete(0)  # by someone else
    w.guest_writes((0x12, 2 * MiB, 64 * 1024))
    missing = w.backup()
    assert missing["level"] == "full" and missing["reason"] == (
        "the tracking bitmap %s is missing from the source" % first["point"]["bitmap"]), missing
    # the disk replaced by a copy of itself (bitmaps and all) while the domain was shut off
    stop_gracefully(w.dom)
    shutil.copy(w.disk(), w.disk() + ".copy")
    os.rename(w.disk() + ".copy", w.disk())
    start_domain(w.dom)
    w.guest_writes((0x13, 3 * MiB, 64 * 1024))
    replaced = w.backup()
    assert replaced["level"] == "full" and "was replaced by another file" in replaced["reason"], replaced
    assert len(load(w.store)["chains"]) == 3
    w.check_every_point()
    assert w.own_checkpoints() == [replaced["point"]["bitmap"]] and w.leftovers() == []


def test_a_guest_write_during_the_copy_is_in_the_next_point(workload):
    """The guest keeps writing while the layer is copied (into the overlay): the point is the disk as frozen, and
    the write is in the next point."""
    w = workload
    w.guest_writes((0x11, 0, 1 * MiB))
    w.backup()
    w.guest_writes((0x12, 2 * MiB, 64 * 1024))
    during = []

    class WritingDuringTheCopy(LiveTracking):
        def changed_ranges(self, name):
            guest_write(w.dom, 0x13, 4 * MiB, 64 * 1024)  # lands in the overlay, after the freeze
            guest_flush(w.dom)
            during.append(name)
            return super().changed_ranges(name)

    target, image = backup_disk(w.dom, "vda")
    done = backup.run_backup(backup.Request(w.store, image), tracking_for=lambda source, manifest, policy:
                             WritingDuringTheCopy(source, manifest, policy, w.dom, target))
    assert during and done["point"]["bytes_copied"] == 64 * 1024
    w.frozen[done["point"]["seq"]] = shutil.copy(w.reference, str(w.directory / "frozen-during.qcow2"))
    write_offline(w.reference, 0x13, 4 * MiB, 64 * 1024)  # the reference learns of it only now
    nxt = w.backup()
    assert nxt["level"] == "incremental" and nxt["point"]["bytes_copied"] == 64 * 1024, nxt
    w.check_every_point()
