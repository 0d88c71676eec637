# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/libvirt-up.sh is idempotent (a second run keeps the running daemons) and gives a KVM
device node the group and mode udev would give it."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from pathlib import Path

from live_helpers import REPO


def daemon_pids() -> dict:
    return {name: Path("/run/%s.pid" % name).read_text().strip() for name in ("virtlogd", "virtlockd", "libvirtd")}


def test_second_libvirt_up_keeps_the_same_daemons(libvirt_up):
    before = daemon_pids()
    again = subprocess.run(["bash", str(REPO / "scripts/libvirt-up.sh")], capture_output=True, text=True, check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already running") == 3
    assert daemon_pids() == before
    assert all(Path("/proc/%s" % pid).exists() for pid in before.values())
    listing = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all"], capture_output=True, text=True, check=False, timeout=30)
    assert listing.returncode == 0


def libvirt_up_with_kvm_device(device: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BCQ_KVM_DEVICE=str(device))
    return subprocess.run(["bash", str(REPO / "scripts/libvirt-up.sh")], capture_output=True, text=True, check=False, timeout=120, env=env)


def test_a_kvm_device_closed_to_the_kvm_group_is_given_to_it(libvirt_up, tmp_path):
    device = tmp_path / "kvm"
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(10, 232))  # /dev/kvm's numbers, root:root 0600
    up = libvirt_up_with_kvm_device(device)
    assert up.returncode == 0, up.stderr
    st = device.stat()
    assert (grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == ("kvm", 0o660)
    assert "was group root mode 600, unusable by the qemu user: set to group kvm, mode 0660" in up.stderr
    again = libvirt_up_with_kvm_device(device)
    assert "is usable by the kvm group (group kvm, mode 660)" in again.stderr


def test_a_kvm_device_open_to_everyone_is_left_alone(libvirt_up, tmp_path):
    device = tmp_path / "kvm"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(10, 232))
    os.chmod(device, 0o666)  # mknod applies the umask
    up = libvirt_up_with_kvm_device(device)
    st = device.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0o666)
    assert "is usable by the kvm group" in up.stderr


def test_without_a_kvm_device_nothing_changes(libvirt_up, tmp_path):
    up = libvirt_up_with_kvm_device(tmp_path / "no-kvm")
    assert up.returncode == 0, up.stderr
    assert "no %s: qemu domains run on TCG" % (tmp_path / "no-kvm") in up.stderr
    assert not (tmp_path / "no-kvm").exists()


def test_the_real_kvm_device_is_usable_by_the_qemu_user(libvirt_up):
    if not os.path.exists("/dev/kvm"):
        assert "no /dev/kvm: qemu domains run on TCG" in libvirt_up
        return
    st = os.stat("/dev/kvm")
    group_ok = grp.getgrgid(st.st_gid).gr_name == "kvm" and st.st_mode & 0o060 == 0o060
    assert group_ok or st.st_mode & 0o006 == 0o006, "%o %d" % (st.st_mode, st.st_gid)
