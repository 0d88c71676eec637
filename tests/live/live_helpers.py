# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-side tools: qemu-img/qemu-io on image files, guest writes through the qemu monitor,
qemu's lock bytes in /proc/locks, and the domain XML the tests define."""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import libvirt_qemu

REPO = Path(os.environ.get("REPO") or Path(__file__).resolve().parents[2])
MiB = 1024 * 1024
KiB = 1024


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)


def create_image(path: str, size: str = "32M", backing: str | None = None) -> str:
    """qcow2 image; ``backing`` is written exactly as given (relative or absolute) with format qcow2."""
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-b", backing, "-F", "qcow2"]
    run(*argv, path, *([] if backing else [size]))
    return path


def write_offline(path: str, pattern: int, offset: int, length: int) -> None:
    run("qemu-io", "-c", "write -P 0x%02x %d %d" % (pattern, offset, length), path)


def reads_pattern(path: str, pattern: int, offset: int, length: int, force_share: bool = False) -> bool:
    """True if the image (through its chain) reads ``pattern`` over the whole range."""
    argv = ["qemu-io", "-r"] + (["-U"] if force_share else []) + ["-c", "read -P 0x%02x %d %d" % (pattern, offset, length), path]
    proc = run(*argv, check=False)  # qemu-io exits 1 on a pattern mismatch
    out = proc.stdout
    return proc.returncode == 0 and "Pattern verification failed" not in out and ("read %d/%d bytes" % (length, length)) in out


def image_info_chain(path: str) -> list[dict]:
    """``qemu-img info -U --backing-chain --output=json``: one dict per image, top first."""
    return json.loads(run("qemu-img", "info", "-U", "--backing-chain", "--output=json", path).stdout)


def image_map(path: str) -> list[dict]:
    return json.loads(run("qemu-img", "map", "-U", "--output=json", path).stdout)


def depth_at(path: str, offset: int) -> int | None:
    """Chain depth (0 = this image) holding the data at ``offset``; None if unallocated everywhere."""
    for extent in image_map(path):
        if extent["start"] <= offset < extent["start"] + extent["length"]:
            return extent["depth"] if extent.get("data") else None
    return None


def domain_xml(name: str, image: str, agent_channel: bool = False, extra_disk_xml: str = "", ns_extra: str = "",
               boot: str = "", memory_mib: int = 64) -> str:
    """A TCG domain with one virtio qcow2 disk (vda); no OS unless ``boot`` (<kernel>/<initrd>/<cmdline>) says."""
    channel = ("<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
               if agent_channel else "")
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name><memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{image}'/>{extra_disk_xml}<target dev='vda' bus='virtio'/></disk>
    {channel}
  </devices>
  {ns_extra}
</domain>"""


# Every domain start in the live tests, timed: (domain name, seconds). The end-of-run summary prints
# the slowest, and the session's start guard (conftest.py) fails fast when starts are slow.
DOMAIN_STARTS: list[tuple[str, float]] = []
# A trivial domain (no OS, 64 MiB) starts in well under a second on a sound host, in 1-3 s with two
# cores kept busy; a host that re-probes qemu before every start takes 5-40 s.
DOMAIN_START_LIMIT_SECONDS = 5.0


def start_domain(dom) -> float:
    """``dom.create()``, timed and recorded in DOMAIN_STARTS; returns the seconds it took."""
    started = time.monotonic()
    dom.create()
    seconds = time.monotonic() - started
    DOMAIN_STARTS.append((dom.name(), seconds))
    return seconds


def kvm_device_state() -> str:
    """/dev/kvm as the qemu user sees it, for error messages."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist (TCG only)"
    st = os.stat("/dev/kvm")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "/dev/kvm is group %s, mode %04o" % (group, stat.S_IMODE(st.st_mode))


def slow_start_cause(seconds: float) -> str:
    return (
        "a trivial domain took %.1f s to start (limit %.0f s). On these machines the usual cause is "
        "/dev/kvm existing but not usable by the qemu user (libvirt-qemu, group kvm): libvirtd then "
        "finds its cached qemu capabilities stale ('KVM was enabled when probing ..., but it is not "
        "available now') and re-probes qemu about 20 times before every domain start. "
        "scripts/libvirt-up.sh gives /dev/kvm group kvm and mode 0660 as udev would; check its output. "
        "Now: %s." % (seconds, DOMAIN_START_LIMIT_SECONDS, kvm_device_state()))


def hmp(dom, command: str) -> str:
    return libvirt_qemu.qemuMonitorCommand(dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)


def guest_device_path(dom, target: str = "vda") -> str:
    """QOM path of the disk's frontend (e.g. /machine/peripheral/virtio-disk0/virtio-backend):
    with -blockdev the device's BlockBackend has no name, so HMP qemu-io needs ``-d <qdev>``."""
    disks = ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk")
    alias = [d.find("alias").get("name") for d in disks if d.find("target").get("dev") == target][0]
    blocks = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-block"}', 0))["return"]
    for block in blocks:
        if block.get("qdev", "").startswith("/machine/peripheral/%s/" % alias):
            return block["qdev"]
    raise AssertionError("no qemu block device for alias %s in %s" % (alias, blocks))


def guest_write(dom, pattern: int, offset: int, length: int, target: str = "vda") -> None:
    """Write as the guest would, through the virtual disk's own BlockBackend (so running block
    jobs see the write exactly like a guest write)."""
    out = hmp(dom, 'qemu-io -d %s "write -P 0x%02x %d %d"' % (guest_device_path(dom, target), pattern, offset, length))
    if out.strip():  # success prints nothing on the monitor (qemu-io's report goes to the qemu log)
        raise AssertionError("guest write failed: %s" % out)


def guest_flush(dom, target: str = "vda") -> None:
    """A guest flush: qemu writes its cached qcow2 metadata, so ``-U`` readers see current data."""
    out = hmp(dom, 'qemu-io -d %s "flush"' % guest_device_path(dom, target))
    if out.strip():
        raise AssertionError("guest flush failed: %s" % out)


def remove_domain(conn, name: str) -> None:
    """Stop and undefine the domain (its checkpoint and snapshot metadata too), if it exists."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)


def stop_gracefully(dom) -> None:
    """SIGTERM only: qemu flushes its qcow2 caches before exiting, so the files are complete."""
    dom.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL)


def lock_bytes(path: str) -> set[int]:
    """Bytes of ``path`` covered by OFD locks (qemu's image locking) in /proc/locks."""
    st = os.stat(path)
    wanted = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    held = set()
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if "->" in fields:  # a blocked waiter, not a held lock
                continue
            if len(fields) >= 8 and fields[1] == "OFDLCK" and fields[5] == wanted:
                start = int(fields[6])
                end = start if fields[7] == "EOF" else int(fields[7])
                held.update(range(start, end + 1))
    return held


def domblklist(name: str) -> dict[str, str]:
    """``virsh domblklist``: target -> source."""
    out = run("virsh", "-c", "qemu:///system", "domblklist", name).stdout
    rows = [line.split(None, 1) for line in out.splitlines()[2:] if line.strip()]
    return {row[0]: row[1].strip() for row in rows if len(row) == 2}
