# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live tests: a real libvirtd (started by scripts/libvirt-up.sh) and real TCG qemu domains.

Everything started here is stopped at the end of the session, also when tests fail:
domains by their finalizers and by libvirt-down.sh (name prefix), daemons by libvirt-down.sh
(only those libvirt-up.sh started), image directories by rmtree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

# The helpers next to this file are imported by name, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_helpers import DOMAIN_START_LIMIT_SECONDS, DOMAIN_STARTS, REPO, domain_xml, kvm_device_state, remove_domain, slow_start_cause, start_domain  # noqa: E402
DOMAIN_PREFIX = "bcq-test-"
URI = "qemu:///system"
JOB_DURATIONS: list[tuple[str, str, float]] = []
# scripts/test.d/60-live.sh points this at a directory it removes even if pytest is killed.
SCRATCH_PARENT = os.environ.get("BCQ_LIVE_TMPDIR") or "/var/tmp"


def _make_collection_importable() -> str | None:
    """Put the checkout on sys.path as ansible_collections.backingchain.qcow2 (a symlink in a temp dir
    unless the checkout already lives at such a path)."""
    if REPO.parts[-3:] == ("ansible_collections", "backingchain", "qcow2"):
        sys.path.insert(0, str(REPO.parents[2]))
        return None
    root = tempfile.mkdtemp(prefix="bcq-live-collections-", dir=SCRATCH_PARENT)
    namespace = Path(root, "ansible_collections", "backingchain")
    namespace.mkdir(parents=True)
    (namespace / "qcow2").symlink_to(REPO)
    sys.path.insert(0, root)
    return root


_COLLECTION_ROOT = _make_collection_importable()
# ansible (tests/live/module_runner.py) finds the collection here, as ansible_collections/backingchain/qcow2.
os.environ["BCQ_LIVE_COLLECTIONS_PATH"] = _COLLECTION_ROOT or str(REPO.parents[2])


def pytest_unconfigure(config):
    if _COLLECTION_ROOT:
        shutil.rmtree(_COLLECTION_ROOT, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    if DOMAIN_STARTS:
        name, seconds = max(DOMAIN_STARTS, key=lambda start: start[1])
        terminalreporter.section("domain starts")
        terminalreporter.write_line("%d domain starts; slowest %.3fs (%s), limit %.0fs"
                                    % (len(DOMAIN_STARTS), seconds, name, DOMAIN_START_LIMIT_SECONDS))
    if not JOB_DURATIONS:
        return
    terminalreporter.section("live block job durations (real libvirt + TCG qemu)")
    for test, label, seconds in JOB_DURATIONS:
        terminalreporter.write_line("%8.3fs  %-28s %s" % (seconds, label, test))


@pytest.fixture
def record_job(request):
    """record_job(label, result_dict): keep the measured duration for the end-of-run table."""
    def record(label: str, result: dict) -> dict:
        JOB_DURATIONS.append((request.node.name, label, float(result["duration"])))
        return result
    return record


@pytest.fixture(scope="session")
def libvirt_up():
    """Start the daemons for the session; libvirt-down.sh runs at the end whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("live tests must run as root (qemu:///system)")
    up = subprocess.run(["bash", str(REPO / "scripts/libvirt-up.sh")], capture_output=True, text=True, check=False, timeout=900)
    try:
        assert up.returncode == 0, "libvirt-up.sh failed:\n%s%s" % (up.stdout, up.stderr)
        yield up.stderr
    finally:
        down = subprocess.run(["bash", str(REPO / "scripts/libvirt-down.sh")], capture_output=True, text=True, check=False, timeout=300)
        assert down.returncode == 0, "libvirt-down.sh failed:\n%s%s" % (down.stdout, down.stderr)


def _guard_domain_start(connection, image_dir: Path) -> None:
    """Start a trivial domain four times and stop the whole session at once if even the fastest of the
    last three starts is slow: the cause is then the host, not a test. The first start may include
    libvirtd's one probe of qemu; taking the fastest of three keeps passing stalls on a busy machine from
    stopping the stage, while a host that re-probes qemu makes every start slow."""
    from live_helpers import create_image
    name = "%sstart-guard" % DOMAIN_PREFIX
    remove_domain(connection, name)
    dom = connection.defineXML(domain_xml(name, create_image(str(image_dir / "guard.qcow2"), size="1M")))
    starts = []
    try:
        for _attempt in range(4):
            starts.append(start_domain(dom))
            dom.destroy()
    finally:
        remove_domain(connection, name)
    print("domain start guard: starts took %s (%s)" % (", ".join("%.3fs" % seconds for seconds in starts), kvm_device_state()))
    if min(starts[1:]) > DOMAIN_START_LIMIT_SECONDS:
        pytest.exit("live tests stopped: " + slow_start_cause(min(starts[1:])), returncode=1)


class Reconnecting:
    """The session's libvirt connection; a test that restarts libvirtd calls reopen() (the old connection and
    its domain handles are dead then: domains must be looked up again)."""

    def __init__(self) -> None:
        self._conn = self._open()

    def reopen(self) -> None:
        self._conn = self._open()

    @staticmethod
    def _open():
        from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect
        return connect(URI)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.fixture(scope="session")
def conn(libvirt_up, images_root):
    connection = Reconnecting()
    _guard_domain_start(connection, images_root)
    yield connection
    for name in connection.listDefinedDomains() + [d.name() for d in connection.listAllDomains()]:
        if name.startswith(DOMAIN_PREFIX):
            remove_domain(connection, name)
    connection.close()


@pytest.fixture(scope="session")
def images_root():
    """A 0755 directory outside /tmp's 0700 pytest dirs: qemu runs as libvirt-qemu and must reach it."""
    root = tempfile.mkdtemp(prefix="bcq-live-images-", dir=SCRATCH_PARENT)
    os.chmod(root, 0o755)
    yield Path(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def image_dir(images_root, request):
    path = images_root / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def make_domain(conn):
    """make_domain(image, start=True, agent_channel=False, ...) -> persistent virDomain, removed after the test."""
    names = []

    def make(image, start: bool = True, **xml_options):
        name = "%s%s" % (DOMAIN_PREFIX, uuid.uuid4().hex[:8])
        names.append(name)
        dom = conn.defineXML(domain_xml(name, str(image), **xml_options))
        if start:
            start_domain(dom)
        return dom

    yield make
    for name in names:
        remove_domain(conn, name)


@pytest.fixture(scope="module")
def agent_guest(conn, images_root):
    """A running domain whose QEMU guest agent answers, with an ext4 disk (vda) mounted in the guest
    (tests/live/agent_guest.py); one per test module (a boot takes about 10 s under TCG), removed after it."""
    from agent_guest import AgentGuest, boot_xml, build_agent_guest, ext4_disk, wait_for_agent
    guest_dir = build_agent_guest()
    directory = Path(tempfile.mkdtemp(prefix="agent-guest-", dir=images_root))
    os.chmod(directory, 0o755)
    disk = ext4_disk(str(directory / "disk.qcow2"))
    name = "%sagent-%s" % (DOMAIN_PREFIX, uuid.uuid4().hex[:8])
    dom = conn.defineXML(domain_xml(name, disk, agent_channel=True, boot=boot_xml(guest_dir), memory_mib=128))
    try:
        start_domain(dom)
        print("agent guest %s: the agent answered %.1f s after the start" % (name, wait_for_agent(dom)))
        yield AgentGuest(dom, directory, disk)
    finally:
        remove_domain(conn, name)
