# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The snapshot_backup role killed in the middle of a backup, then run again.

ansible-playbook runs the role on an image given by path and is killed (SIGKILL, the whole
process group) once the overlay is on the image, or once the export is being written. A write
to the overlay stands for a guest that went on writing. The next run must commit the overlay
back (the write lands in the image), remove the unfinished export and make a complete backup;
qemu-img checks the result.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.backingchain.qcow2.tests.helpers.playbook import BACKUP_ROLE_WITH_REPORT, Playbook, kill_run
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    qemu_compare,
    qemu_img_check,
    qemu_img_create,
    qemu_img_info,
    qemu_io,
)

REPO = Path(__file__).resolve().parents[2]
STAMP_TIME = 1767225600  # 2026-01-01T00:00:00Z, daily stamp 2026-01-01
STAMP = "2026-01-01"


@pytest.fixture
def setup(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    image = images / "vm.qcow2"
    qemu_img_create(image, "128M")
    qemu_io(image, "write -P 0x21 0 96M")  # enough data for the export to take a moment
    settings = {
        "snapshot_backup_dir": str(tmp_path / "backups"),
        "snapshot_backup_disks": [{"path": str(image)}],
        "snapshot_backup_time": STAMP_TIME,
        "report_file": str(tmp_path / "report.json"),
    }
    playbook = Playbook(tmp_path, BACKUP_ROLE_WITH_REPORT, settings)
    return {"tmp": tmp_path, "image": image, "overlay": images / "vm.backup-overlay.qcow2",
            "backup_dir": tmp_path / "backups" / "vm", "argv": playbook.argv, "env": playbook.env}


def _run_and_kill(setup, ready, timeout=120.0):
    proc = subprocess.Popen(setup["argv"], env=setup["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail("the run ended before the kill point:\n%s" % proc.stdout.read().decode())
            if time.monotonic() > deadline:
                pytest.fail("the kill point was not reached in %ss" % timeout)
            time.sleep(0.005)
    finally:
        kill_run(proc)


def _exporting(setup):
    directory = setup["backup_dir"]
    # the module builds .STAMP.qcow2.XXXXXXXX.tmp, the engine writes ..STAMP.qcow2.XXXXXXXX.tmp.YYYYYYYY.tmp first
    return directory.is_dir() and any(p.name.lstrip(".").startswith("%s.qcow2." % STAMP) and p.name.endswith(".tmp")
                                      for p in directory.iterdir())


@pytest.mark.parametrize("kill_point", ["overlay", "export"])
def test_killed_backup_is_committed_back_and_redone(setup, kill_point):
    overlay, image, backups = setup["overlay"], setup["image"], setup["backup_dir"]
    ready = overlay.exists if kill_point == "overlay" else functools.partial(_exporting, setup)

    _run_and_kill(setup, ready)

    # What the killed run left: the image frozen under the overlay, the backup marked in progress.
    assert overlay.exists()
    assert qemu_img_info(overlay)["backing-filename"] == str(image)
    assert (backups / ("%s.partial" % STAMP)).exists()
    assert not (backups / ("%s.manifest.json" % STAMP)).exists()
    if kill_point == "export":
        assert _exporting(setup)
    # The guest went on writing to the overlay.
    qemu_io(overlay, "write -P 0x66 100M 1M")

    rerun = subprocess.run(setup["argv"], env=setup["env"], capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    report = json.loads((setup["tmp"] / "report.json").read_text())
    disk = report["disks"][0]
    assert disk["recovered"] == [str(overlay)]
    assert disk["removed_partial"] == [STAMP]
    assert disk["action"] == "created"
    # The overlay was committed back and removed: the guest's write is in the image.
    assert not overlay.exists()
    assert "backing-filename" not in qemu_img_info(image)
    assert "Pattern verification failed" not in qemu_io(image, "read -P 0x66 100M 1M")
    assert "Pattern verification failed" not in qemu_io(image, "read -P 0x21 0 96M")
    # Nothing unfinished is left; the new backup is complete, clean and reads like the image.
    names = sorted(p.name for p in backups.iterdir())
    assert names == ["%s.manifest.json" % STAMP, "%s.qcow2" % STAMP, "index.json"]
    backup = backups / ("%s.qcow2" % STAMP)
    assert qemu_img_check(backup).clean
    assert qemu_compare(image, backup)
    manifest = json.loads((backups / ("%s.manifest.json" % STAMP)).read_text())
    assert manifest["verification"]["result"] == "ok"
    assert manifest["created"] == STAMP_TIME

    # A third run finds the backup of the period and changes nothing.
    again = subprocess.run(setup["argv"], env=setup["env"], capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=1 " in again.stdout  # only the test's own report file
    assert json.loads((setup["tmp"] / "report.json").read_text())["disks"][0]["action"] == "exists"
