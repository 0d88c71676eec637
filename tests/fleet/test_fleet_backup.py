# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/backup.yml and playbooks/restore.yml across three hosts over SSH."""

from __future__ import annotations

import glob
import json
import os

from ansible_collections.backingchain.qcow2.tests.fleet.conftest import run_playbook
from ansible_collections.backingchain.qcow2.tests.fleet.sshd_fleet import HOSTS
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    backing_chain,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_io,
)


def test_backup_and_restore_playbooks_across_the_fleet(fleet):
    views = {}
    for index, host in enumerate(HOSTS):
        directory = fleet.image_dir(host)
        base = qemu_img_create(os.path.join(directory, "disk-base.qcow2"), "32M")
        qemu_io(base, "write -P 0x20 0 4M")
        disk = qemu_img_create(os.path.join(directory, "disk.qcow2"), backing="disk-base.qcow2", cwd=directory)
        qemu_io(disk, "write -P %d %dM 2M" % (0x30 + index, 8 + index * 4))
        views[host] = os.path.join(fleet.root, "%s-disk.view.raw" % host)
        qemu_img("convert", "-O", "raw", disk, views[host])
    extra = {"snapshot_backup_disks": [{"path": "{{ image_dir }}/disk.qcow2"}],
             "snapshot_backup_dir": "{{ image_dir }}/../backups", "snapshot_backup_compress": True}

    rc, out = run_playbook(fleet, "backup.yml", extra)
    assert rc == 0, out
    for host in HOSTS:
        backups = glob.glob(os.path.join(fleet.root, host, "backups", "disk", "*.qcow2"))
        assert len(backups) == 1, (host, backups, out)
        backup = backups[0]
        assert qemu_img_check(backup).returncode == 0
        assert backing_chain(backup) == [(backup, "qcow2")]  # standalone
        assert qemu_compare(backup, views[host], fmt_b="raw"), host
        manifest = json.load(open(backup[:-len(".qcow2")] + ".manifest.json"))
        assert manifest["verification"]["result"] == "ok" and manifest["verification"]["checked"], manifest
        disk = os.path.join(fleet.image_dir(host), "disk.qcow2")
        # the overlay was committed back: the disk's chain is what it was
        assert [os.path.basename(p) for p, _f in backing_chain(disk)] == ["disk.qcow2", "disk-base.qcow2"]
        assert qemu_compare(disk, views[host], fmt_b="raw")

    rc, out = run_playbook(fleet, "backup.yml", extra)  # the same period: nothing to do
    assert rc == 0 and "changed=0" in out.split("PLAY RECAP")[-1].replace(" ", ""), out

    restore = {"snapshot_backup_dir": "{{ image_dir }}/../backups", "snapshot_backup_restore_name": "disk",
               "snapshot_backup_restore_mode": "full", "snapshot_backup_restore_path": "{{ image_dir }}/restored.qcow2"}
    rc, out = run_playbook(fleet, "restore.yml", restore)
    assert rc == 0, out
    for host in HOSTS:
        restored = os.path.join(fleet.image_dir(host), "restored.qcow2")
        assert qemu_compare(restored, views[host], fmt_b="raw"), host
        assert qemu_img_check(restored).returncode == 0
