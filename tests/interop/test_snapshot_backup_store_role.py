# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The snapshot_backup role with snapshot_backup_level on an image: check mode predicts each point and writes
nothing, the runs take a full then an increment (compressed, as snapshot_backup_compress asks), and each point
restored reads like the image did (qemu-img)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ansible_collections.backingchain.qcow2.tests.helpers.playbook import BACKUP_ROLE_WITH_REPORT, Playbook
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_compare, qemu_img_check, qemu_img_create, qemu_io


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob('*') if p.is_file()}


def _run(playbook: Playbook, report: Path, check: bool = False) -> dict:
    argv = playbook.argv + (['--check'] if check else [])
    proc = subprocess.run(argv, env=playbook.env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    disk = json.loads(report.read_text())['disks'][0]
    os.unlink(report)
    return disk


def test_check_mode_predicts_each_point_and_the_points_restore(tmp_path):
    image = tmp_path / 'images' / 'vm.qcow2'
    image.parent.mkdir()
    qemu_img_create(image, '64M')
    qemu_io(image, 'write -P 0x11 0 4M')
    backups = tmp_path / 'backups'
    report = tmp_path / 'report.json'
    playbook = Playbook(tmp_path, BACKUP_ROLE_WITH_REPORT, {
        'snapshot_backup_dir': str(backups), 'snapshot_backup_level': 'auto', 'snapshot_backup_compress': True,
        'snapshot_backup_disks': [{'path': str(image)}], 'report_file': str(report)})

    before = _files(image.parent)
    planned = _run(playbook, report, check=True)
    assert not backups.exists() and _files(image.parent) == before  # check mode wrote nothing
    assert planned['action'] == 'planned' and planned['manifest']['level'] == 'full'

    full = _run(playbook, report)
    assert full['action'] == 'created' and full['manifest']['level'] == 'full' and full['manifest']['seq'] == 0
    first = tmp_path / 'at-0.qcow2'
    qemu_img_create(first, '64M')
    qemu_io(first, 'write -P 0x11 0 4M')

    qemu_io(image, 'write -P 0x22 8M 1M')
    planned = _run(playbook, report, check=True)
    assert planned['action'] == 'planned'
    assert (planned['manifest']['level'], planned['manifest']['seq']) == ('incremental', 1)
    increment = _run(playbook, report)
    assert (increment['manifest']['level'], increment['manifest']['seq']) == ('incremental', 1)
    assert Path(increment['file']).is_file() and increment['file'].endswith('/0001.qcow2')
    assert os.path.getsize(increment['file']) < 2 * 1024 * 1024  # the changed MiB, not the disk

    for layer, expected, clusters in ((full['file'], first, 64), (increment['file'], image, 16)):
        check = qemu_img_check(layer)
        assert check.clean and check.report.get('compressed-clusters') == clusters  # snapshot_backup_compress
        assert qemu_compare(layer, expected)
