# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A guest whose QEMU guest agent answers: Debian's kernel and an initramfs with busybox and qemu-ga
(scripts/agent-guest.sh builds them once and caches them), booted directly by libvirt. Its init mounts the
ext4 file system of vda at /mnt and keeps dirty data in the page cache (no periodic writeback, a one-hour
journal commit interval), so a file written through the agent reaches the disk only when something syncs
it: a freeze does. What a point of that disk holds therefore shows whether it was frozen:

- frozen: the file is there and the file system is clean (ext4's freeze flushes the journal and clears
  needs_recovery);
- not frozen: the file is missing and the journal still needs recovery, as after a power cut."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import typing
from pathlib import Path

import libvirt
import libvirt_qemu
from live_helpers import REPO, run

GUEST_DIR = os.environ.get("BCQ_AGENT_GUEST_DIR", "/var/cache/backingchain-live/agent-guest")
# A booted guest answers in about 10 s under TCG here (2 cores shared with other test runs).
AGENT_WAIT_SECONDS = 180.0


class AgentGuest(typing.NamedTuple):
    dom: typing.Any  # libvirt.virDomain
    directory: Path
    disk: str


def build_agent_guest() -> Path:
    """The directory with vmlinux and initrd.img (built on first use, reused while the packages stay)."""
    built = subprocess.run(["bash", str(REPO / "scripts/agent-guest.sh"), GUEST_DIR], capture_output=True, text=True,
                           check=False, timeout=900)
    assert built.returncode == 0, "scripts/agent-guest.sh failed:\n%s%s" % (built.stdout, built.stderr)
    return Path(built.stdout.strip().splitlines()[-1])


def boot_xml(guest_dir: Path) -> str:
    """<os> children booting the agent guest (the kernel is an ELF with a PVH entry, see agent-guest.sh)."""
    return ("<kernel>%s</kernel><initrd>%s</initrd><cmdline>console=ttyS0 quiet mitigations=off panic=-1</cmdline>"
            % (guest_dir / "vmlinux", guest_dir / "initrd.img"))


def ext4_disk(path: str, size: str = "32M") -> str:
    """A qcow2 image (compat 1.1) holding an ext4 file system made on the host; inode tables and journal are
    written now, so the guest's kernel has no lazy initialisation to write later."""
    raw = path + ".raw"
    run("truncate", "-s", size, raw)
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", raw)
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path)
    os.unlink(raw)
    return path


def agent(dom, command: str, timeout: int = 30, **arguments):
    """One guest agent command through libvirt; its "return" value."""
    message = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(message), timeout, 0))["return"]


def wait_for_agent(dom, seconds: float = AGENT_WAIT_SECONDS) -> float:
    """Seconds until the agent answered guest-ping after the domain started."""
    started = time.monotonic()
    while True:
        try:
            agent(dom, "guest-ping", timeout=2)
            return time.monotonic() - started
        except libvirt.libvirtError as exc:
            if time.monotonic() - started > seconds:
                raise AssertionError("the guest agent did not answer within %.0f s: %s" % (seconds, exc)) from exc
            time.sleep(0.5)


def write_guest_file(dom, path: str, text: str) -> None:
    """Write a file in the guest through the agent, without syncing it: it stays in the guest's page cache."""
    handle = agent(dom, "guest-file-open", path=path, mode="w")
    try:
        agent(dom, "guest-file-write", handle=handle, **{"buf-b64": base64.b64encode(text.encode()).decode()})
    finally:
        agent(dom, "guest-file-close", handle=handle)


def freeze_status(dom) -> str:
    return agent(dom, "guest-fsfreeze-status")


def file_system_state(image: str, raw: str, path: str) -> dict:
    """What a point (an image, through its chain) holds: whether its ext4 is clean (e2fsck -fn finds nothing,
    no journal to recover) and the text of ``path`` in it (None if missing)."""
    run("qemu-img", "convert", "-q", "-U", "-O", "raw", image, raw)
    try:
        checked = run("e2fsck", "-fn", raw, check=False)
        features = run("dumpe2fs", "-h", raw, check=False).stdout
        feature_line = [line for line in features.splitlines() if line.startswith("Filesystem features:")]
        cat = run("debugfs", "-R", "cat %s" % path, raw, check=False)
        missing = cat.returncode != 0 or "File not found" in cat.stderr
        return {"clean": checked.returncode == 0,
                "needs_recovery": bool(feature_line) and "needs_recovery" in feature_line[0],
                "text": None if missing else cat.stdout,
                "e2fsck": checked.stdout + checked.stderr}
    finally:
        os.unlink(raw)
