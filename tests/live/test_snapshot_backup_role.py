# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The snapshot_backup role (run by ansible-playbook) on libvirt domains: running (disk-only
snapshot, export of the frozen image while the guest writes, active commit with pivot), shut off
(offline, the definition follows), and running on an overlay an interrupted run left (with the run's active
commit still going on in libvirt, too)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from live_helpers import MiB, REPO, create_image, guest_flush, guest_write, image_info_chain, reads_pattern, run, start_domain, stop_gracefully, write_offline

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import start_active_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import current_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot
from ansible_collections.backingchain.qcow2.tests.helpers.playbook import BACKUP_ROLE_WITH_REPORT

STAMP_TIME = 1767225600  # 2026-01-01T00:00:00Z
STAMP = "2026-01-01"
SUFFIX = ".backup-overlay.qcow2"

RESTORE_PLAYBOOK = """
- name: Restore
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Restore
      ansible.builtin.include_role:
        name: backingchain.qcow2.snapshot_backup
        tasks_from: restore
"""


@pytest.fixture(scope="module")
def collections_path():
    """ansible_collections/backingchain/qcow2 -> the checkout, for ansible-playbook."""
    root = Path(tempfile.mkdtemp(prefix="bcq-live-role-collections-", dir=os.environ.get("BCQ_LIVE_TMPDIR") or "/var/tmp"))
    link = root / "ansible_collections" / "backingchain" / "qcow2"
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO, target_is_directory=True)
    yield root
    link.unlink()
    for directory in (link.parent, link.parent.parent, root):
        directory.rmdir()


class Backup:
    """The role run by ansible-playbook on one domain disk, backups under ``work/backups``."""

    def __init__(self, collections: Path, work: Path, domain: str, **extra):
        self.collections = collections
        self.work = work
        self.backups = work / "backups" / ("%s-vda" % domain)
        self.report_file = work / "report.json"
        settings = {
            "snapshot_backup_dir": str(work / "backups"),
            "snapshot_backup_disks": [{"domain": domain, "disk": "vda"}],
            "snapshot_backup_time": STAMP_TIME,
            "snapshot_backup_timeout": 300,
            "report_file": str(self.report_file),
            "ansible_python_interpreter": sys.executable,
        }
        settings.update(extra)
        (work / "settings.json").write_text(json.dumps(settings))
        (work / "playbook.yml").write_text(BACKUP_ROLE_WITH_REPORT)
        self.argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                     str(work / "playbook.yml"), "-e", "@%s" % (work / "settings.json")]
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_LOCALHOST_WARNING="0")

    def start(self, check: bool = False) -> subprocess.Popen:
        return subprocess.Popen(self.argv + (["--check"] if check else []), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def finish(self, proc: subprocess.Popen) -> dict:
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out
        self.output = out
        return json.loads(self.report_file.read_text())["disks"][0]

    def run(self, check: bool = False) -> dict:
        return self.finish(self.start(check))

    def check(self) -> dict:
        """A --check run: the report of the plan (written by the test's own task, which runs for real)."""
        return self.run(check=True)

    def restore(self, **settings) -> None:
        """tasks_from: restore with these variables (and the backup directory)."""
        (self.work / "restore.yml").write_text(RESTORE_PLAYBOOK)
        (self.work / "restore.json").write_text(json.dumps(dict(settings, snapshot_backup_dir=str(self.work / "backups"),
                                                                ansible_python_interpreter=sys.executable)))
        argv = self.argv[:5] + [str(self.work / "restore.yml"), "-e", "@%s" % (self.work / "restore.json")]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def manifest(self) -> dict:
        return json.loads((self.backups / ("%s.manifest.json" % STAMP)).read_text())

    @property
    def file(self) -> str:
        return str(self.backups / ("%s.qcow2" % STAMP))


def check_backup(path: str, virtual_size: int) -> None:
    info = image_info_chain(path)
    assert len(info) == 1 and info[0]["format"] == "qcow2" and info[0]["virtual-size"] == virtual_size
    run("qemu-img", "check", "-q", path)


def recap_changed(output: str) -> int:
    line = [line for line in output.splitlines() if line.startswith("localhost ") and "changed=" in line][-1]
    return int(line.split("changed=")[1].split()[0])


def test_running_domain(collections_path, make_domain, image_dir, conn):
    base = create_image(str(image_dir / "base.qcow2"), "32M")
    write_offline(base, 0x11, 0, 4 * MiB)
    image = create_image(str(image_dir / "web.qcow2"), backing=base)
    dom = make_domain(image)
    guest_write(dom, 0x22, 4 * MiB, MiB)  # before the backup: in the backup
    guest_flush(dom)
    overlay = str(image_dir / ("web" + SUFFIX))
    backup = Backup(collections_path, image_dir, dom.name())

    plan = backup.check()
    assert plan["action"] == "planned" and plan["source"]["state"] == "running"
    assert live_chain(dom, "vda") == [image, base]
    assert not os.path.exists(overlay) and not backup.backups.exists()

    proc = backup.start()
    deadline = time.monotonic() + 120
    while live_chain(dom, "vda")[0] != overlay:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the overlay never became the active image"
        time.sleep(0.02)
    guest_write(dom, 0x33, 8 * MiB, MiB)  # while the image is frozen: goes to the overlay, not into the backup
    assert live_chain(dom, "vda")[0] == overlay, "the role committed back before the guest wrote"
    report = backup.finish(proc)

    assert report["action"] == "created" and report["recovered"] == []
    assert report["source"] == {"kind": "domain", "domain": dom.name(), "disk": "vda", "uri": "qemu:///system",
                                "state": "running", "image": image}
    # The domain runs on its image again, the overlay is gone, no job is left.
    assert dom.isActive()
    assert live_chain(dom, "vda") == [image, base]
    assert current_job(dom, "vda") is None
    assert not os.path.exists(overlay)
    # The backup is the frozen image: what was written before the snapshot, not what came after.
    check_backup(backup.file, 32 * MiB)
    assert reads_pattern(backup.file, 0x11, 0, 4 * MiB)
    assert reads_pattern(backup.file, 0x22, 4 * MiB, MiB)
    assert reads_pattern(backup.file, 0, 8 * MiB, MiB)
    manifest = backup.manifest()
    assert manifest["source"]["state"] == "running"
    assert [image_["filename"] for image_ in manifest["source_chain"]] == [image, base]
    assert manifest["verification"]["result"] == "ok"
    assert manifest["commit"]["job"]["outcome"] == "pivoted"
    assert manifest["duration"]["total"] > 0 and manifest["frozen_for"] > 0

    # The same period again: nothing changes (the playbook's own report file aside).
    again = backup.run()
    assert again["action"] == "exists"
    assert recap_changed(backup.output) == 1
    assert live_chain(dom, "vda") == [image, base]

    # The guest's write during the backup was committed into its image.
    stop_gracefully(dom)
    assert reads_pattern(image, 0x33, 8 * MiB, MiB)
    assert reads_pattern(image, 0x22, 4 * MiB, MiB)


def test_shut_off_domain(collections_path, make_domain, image_dir):
    image = create_image(str(image_dir / "db.qcow2"), "16M")
    write_offline(image, 0x44, 0, 2 * MiB)
    dom = make_domain(image, start=False)
    backup = Backup(collections_path, image_dir, dom.name())

    report = backup.run()

    assert report["action"] == "created"
    assert report["source"]["state"] == "shut off"
    disk = select_disk(domain_disks(dom, inactive=True), target="vda")
    assert (disk.source, disk.format, disk.has_backing_store) == (image, "qcow2", False)
    assert not os.path.exists(str(image_dir / ("db" + SUFFIX)))
    assert "backing-filename" not in image_info_chain(image)[0]
    check_backup(backup.file, 16 * MiB)
    assert reads_pattern(backup.file, 0x44, 0, 2 * MiB)
    assert backup.manifest()["source"]["state"] == "shut off"
    start_domain(dom)  # it starts on its image
    assert live_chain(dom, "vda") == [image]


def test_running_domain_left_on_overlay(collections_path, make_domain, image_dir):
    image = create_image(str(image_dir / "app.qcow2"), "16M")
    write_offline(image, 0x55, 0, MiB)
    dom = make_domain(image)
    overlay = str(image_dir / ("app" + SUFFIX))
    # What a run killed after its snapshot leaves: the domain writing to the role's overlay.
    create_disk_only_snapshot(dom, {"vda": overlay})
    guest_write(dom, 0x66, 2 * MiB, MiB)
    guest_flush(dom)
    assert live_chain(dom, "vda") == [overlay, image]
    backup = Backup(collections_path, image_dir, dom.name())

    plan = backup.check()
    assert plan["recovered"] == [overlay] and plan["action"] == "planned"
    assert live_chain(dom, "vda") == [overlay, image] and current_job(dom, "vda") is None
    assert not backup.backups.exists()

    report = backup.run()

    assert report["recovered"] == [overlay]
    assert report["action"] == "created"
    assert report["source"]["image"] == image
    assert live_chain(dom, "vda") == [image]
    assert not os.path.exists(overlay)
    # The backup was taken after the commit back: it has the write made on the leftover overlay.
    check_backup(backup.file, 16 * MiB)
    assert reads_pattern(backup.file, 0x55, 0, MiB)
    assert reads_pattern(backup.file, 0x66, 2 * MiB, MiB)
    stop_gracefully(dom)
    assert reads_pattern(image, 0x66, 2 * MiB, MiB)


def test_running_domain_left_with_its_active_commit_running(collections_path, make_domain, image_dir):
    image = create_image(str(image_dir / "job.qcow2"), "16M")
    write_offline(image, 0x55, 0, MiB)
    dom = make_domain(image)
    overlay = str(image_dir / ("job" + SUFFIX))
    create_disk_only_snapshot(dom, {"vda": overlay})
    guest_write(dom, 0x67, 2 * MiB, MiB)
    # What a run killed during its commit back leaves: libvirt's active commit goes on, in sync, un-pivoted.
    start_active_commit(dom, "vda", base=image)
    assert current_job(dom, "vda")["type"] == 4
    backup = Backup(collections_path, image_dir, dom.name())

    plan = backup.check()
    assert plan["recovered"] == [overlay] and plan["action"] == "planned"
    assert live_chain(dom, "vda") == [overlay, image] and current_job(dom, "vda") is not None

    report = backup.run()

    assert report["recovered"] == [overlay] and report["action"] == "created", report
    assert live_chain(dom, "vda") == [image] and current_job(dom, "vda") is None
    assert not os.path.exists(overlay)
    check_backup(backup.file, 16 * MiB)
    assert reads_pattern(backup.file, 0x67, 2 * MiB, MiB)
    stop_gracefully(dom)
    assert reads_pattern(image, 0x55, 0, MiB) and reads_pattern(image, 0x67, 2 * MiB, MiB)


def test_instant_restore_boots_and_is_finished_while_running(collections_path, make_domain, image_dir):
    image = create_image(str(image_dir / "src.qcow2"), "16M")
    write_offline(image, 0x77, 0, 2 * MiB)
    source = make_domain(image, start=False)
    # qemu (libvirt-qemu) must reach the backup that the instant restore boots from
    backup = Backup(collections_path, image_dir, source.name(), snapshot_backup_dir_mode="0755")
    assert backup.run()["action"] == "created"
    restored = str(image_dir / "restored.qcow2")
    pin = backup.backups / ("%s.pin-%s.json" % (STAMP, hashlib.sha1(restored.encode()).hexdigest()[:12]))

    backup.restore(snapshot_backup_restore_name="%s-vda" % source.name(), snapshot_backup_restore_mode="instant",
                   snapshot_backup_restore_path=restored)

    assert image_info_chain(restored)[0]["backing-filename"] == backup.file
    assert pin.exists()
    dom = make_domain(restored)  # boots at once from the backup
    guest_write(dom, 0x78, MiB, MiB)
    guest_flush(dom)

    backup.restore(snapshot_backup_restore_mode="finish", snapshot_backup_restore_path=restored,
                   snapshot_backup_restore_domain=dom.name())

    assert dom.isActive()
    assert live_chain(dom, "vda") == [restored]
    assert current_job(dom, "vda") is None
    assert not pin.exists()
    stop_gracefully(dom)
    assert "backing-filename" not in image_info_chain(restored)[0]
    assert reads_pattern(restored, 0x77, 0, MiB) and reads_pattern(restored, 0x78, MiB, MiB)
    # the backup itself never changed
    assert reads_pattern(backup.file, 0x77, 0, 2 * MiB)


def test_incremental_store_of_a_running_domain(collections_path, make_domain, image_dir):
    """snapshot_backup_level: each run one point of the disk into its store: a full, then an increment; every
    point reads as the disk did when it was taken."""
    image = create_image(str(image_dir / "inc.qcow2"), "16M")
    reference = create_image(str(image_dir / "reference.qcow2"), "16M")
    dom = make_domain(image)
    backup = Backup(collections_path, image_dir, dom.name(), snapshot_backup_level="auto", snapshot_backup_keep_last=0)
    store = backup.backups / "store"
    frozen = []
    for pattern, offset in ((0x11, 0), (0x22, 4 * MiB)):
        guest_write(dom, pattern, offset, MiB)
        guest_flush(dom)
        write_offline(reference, pattern, offset, MiB)
        frozen.append(shutil.copy(reference, str(image_dir / ("frozen-%d.qcow2" % len(frozen)))))
        report = backup.run()
        assert report["action"] == "created" and int(report["manifest"]["seq"]) == len(frozen) - 1, report
    assert report["manifest"]["level"] == "incremental" and report["manifest"]["chain"] == [
        "0000.qcow2", "0001.qcow2"], report
    assert int(report["manifest"]["sizes"]["backup_bytes"]) > 0
    for seq, expected in enumerate(frozen):
        run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", expected, str(store / "chain-0001" / ("%04d.qcow2" % seq)))
    assert live_chain(dom, "vda") == [image]
