# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_backup of a running libvirt domain against virtnbdbackup, side by side on the same disk and guest writes.

One repetition runs each tool in turn (the order alternates between repetitions; sync and --settle seconds before
each) on its own copy of one disk under its own domain: a 4 GiB qcow2 disk (compat 1.1) holding 1 GiB of data (4 MiB
runs every 16 MiB), under a TCG domain with no OS started through a real libvirtd (scripts/libvirt-up.sh):
  a full backup; 4096 x 64 KiB guest writes at random cluster-aligned offsets (256 MiB less the overlaps, HMP qemu-io
  through the virtual disk, then a guest flush; the same offsets for both tools) and an incremental; one more
  incremental with no change; the domain shut off, and a restore of the latest point (qcow2_backup_restore mode
  full; virtnbdrestore of the full and both increments), compared with the disk (qemu-img compare), so a wrong
  backup cannot pass for a fast one; then the same restore again once the page cache is dropped, as a store
  written long before is read.
Ours runs as a module process, as an Ansible task runs on the target; its start-up (the interpreter and the module's
imports) is timed once per repetition and reported apart.

Not one domain for both: virtnbdbackup refuses to start while a checkpoint it did not create exists ("Foreign
checkpoint found"), and ours keeps its own checkpoint between points. virtnbdbackup needs nothing else of the
domain: libvirt checkpoints on a qcow2 v3 disk, a socket in /var/tmp; without a guest agent it takes
crash-consistent backups, as ours does.
"""


from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "live"))
MiB = 1 << 20
GiB = 1 << 30
URI = "qemu:///system"
DOMAIN_PREFIX = "bcq-bench-"


def _sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _timed(cmd, env=None):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("command failed: %s\n%s%s" % (" ".join(cmd), proc.stdout[-2000:], proc.stderr[-2000:]))
    return elapsed, proc.stdout


def build_disk(d):
    """template.qcow2: 4 GiB virtual, 1 GiB of data in 4 MiB runs every 16 MiB (the main workload's base)."""
    path = os.path.join(d, "template.qcow2")
    if os.path.exists(path):
        return path
    os.makedirs(d, exist_ok=True)
    _sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", path + ".tmp", str(4 * GiB))
    cmds = ["write -P %d %d 4M" % (i % 250 + 1, i * 16 * MiB) for i in range(256)]
    for i in range(0, len(cmds), 400):
        _sh("qemu-io", *sum((["-c", c] for c in cmds[i:i + 400]), []), path + ".tmp")
    os.rename(path + ".tmp", path)
    return path


class SystemLock:
    """An flock held while libvirtd is up and a domain runs (hosts where others share libvirtd)."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        if self.path:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _wait_until_openable(image, timeout=120.0):
    deadline = time.monotonic() + timeout
    while subprocess.run(["qemu-img", "info", image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("%s still cannot be opened %.0f s after its restore" % (image, timeout))
        time.sleep(0.02)


def _guest_writes(dom, rnd, count, length, span=4 * GiB):
    """count writes of length bytes at random length-aligned offsets in the first span bytes, through the guest's
    disk."""
    from live_helpers import guest_device_path, guest_flush, hmp
    qdev = guest_device_path(dom)
    for i in range(count):
        offset = rnd.randrange(span // length) * length
        out = hmp(dom, 'qemu-io -d %s "write -P %d %d %d"' % (qdev, 0x30 + i % 200, offset, length))
        if out.strip():
            raise SystemExit("guest write failed: %s" % out)
    guest_flush(dom)


class Side:
    """One tool's run of a repetition: its domain, disk copy and backup directory, and its commands."""

    def __init__(self, tool, root, runner):
        self.tool = tool
        self.dir = os.path.join(root, tool)
        self.runner = runner
        self.name = DOMAIN_PREFIX + uuid.uuid4().hex[:8]
        self.disk = os.path.join(self.dir, "disk.qcow2")
        self.store = os.path.join(self.dir, "store")
        self.restored = os.path.join(self.dir, "restored")
        self.restored_cold = os.path.join(self.dir, "restored-cold")

    def backup(self, level):
        """The backup command; level is full or incremental."""
        if self.tool == "ours":
            args = {"domain": self.name, "uri": URI, "disk": "vda", "store": self.store,
                    "level": "full" if level == "full" else "auto"}
            return self.runner.command("qcow2_backup", args, self.dir)
        return ["virtnbdbackup", "-U", URI, "-d", self.name, "-l", "full" if level == "full" else "inc",
                "-o", self.store, "-n"]

    def restore(self, into):
        if self.tool == "ours":
            args = {"store": self.store, "dest": os.path.join(into, "vda.qcow2")}
            return self.runner.command("qcow2_backup_restore", args, self.dir)
        return ["virtnbdrestore", "-U", URI, "-i", self.store, "-o", into, "-n"]

    def increment_bytes(self, seq, stdout):
        """The size of the file holding increment seq (ours: the layer the module reports, after checking it is an
        increment; theirs: the disk's .data file of that increment)."""
        if self.tool == "ours":
            result = json.loads(stdout)
            if result["point"]["level"] != "incremental":
                raise SystemExit("our point %d is not an increment: %s" % (seq, result["point"]))
            return os.path.getsize(result["layer"])
        files = glob.glob(os.path.join(self.store, "vda.inc.virtnbdbackup.%d.data" % seq))
        if len(files) != 1:
            raise SystemExit("virtnbdbackup increment %d not found in %s" % (seq, os.listdir(self.store)))
        return os.path.getsize(files[0])


def run_side(side, data, conn, rep_no):
    """Full, 256 MiB of guest writes, incremental, incremental with no change, shut-off, restore; times and sizes.
    The guest writes are the same for both tools of a repetition (same seed)."""
    from live_helpers import domain_xml, remove_domain, stop_gracefully
    os.makedirs(side.dir)
    os.chmod(side.dir, 0o755)
    _sh("cp", "--sparse=always", os.path.join(data, "template.qcow2"), side.disk)
    env = side.runner.env if side.tool == "ours" else None
    out = {}
    dom = conn.defineXML(domain_xml(side.name, side.disk))
    try:
        dom.create()
        out["full"] = _timed(side.backup("full"), env)[0]
        _guest_writes(dom, random.Random(1000 + rep_no), 4096, 64 * 1024)
        out["inc"], stdout = _timed(side.backup("incremental"), env)
        out["inc_bytes"] = side.increment_bytes(1, stdout)
        out["none"], stdout = _timed(side.backup("incremental"), env)
        out["none_bytes"] = side.increment_bytes(2, stdout)
        stop_gracefully(dom)
        for _attempt in range(100):
            if not dom.isActive():
                break
            time.sleep(0.1)
        out["dirty_mib_at_restore"] = _dirty_mib()  # writeback still to come competes with the restore's I/O
        out["restore_returned"], out["restore"] = _restore(side, side.restored, env)
        # a store is seldom restored right after it was written: the same restore again from a cold page cache
        # (virtnbdbackup writes its files through the cache, ours writes its layers around it)
        _drop_caches()
        out["restore_cold_returned"], out["restore_cold"] = _restore(side, side.restored_cold, env)
    finally:
        remove_domain(conn, side.name)
    return out


def _restore(side, into, env):
    """Restore the latest point into the empty directory into; (seconds until the command returns, until the image
    can be opened), after checking the image reads as the disk."""
    os.makedirs(into)
    start = time.perf_counter()
    returned = _timed(side.restore(into), env)[0]
    images = [p for p in glob.glob(os.path.join(into, "*")) if not p.endswith((".xml", ".log"))]
    if len(images) != 1:
        raise SystemExit("%s restore wrote %s" % (side.tool, images))
    # virtnbdrestore returns while its qemu-nbd still holds the image (and may still be flushing it): the
    # restore is done when the image can be opened
    _wait_until_openable(images[0])
    done = time.perf_counter() - start
    # a wrong backup must not pass for a fast one
    _sh("qemu-img", "compare", "-q", side.disk, images[0])
    return returned, done


def _dirty_mib():
    """MiB of the page cache waiting for, or under, writeback (/proc/meminfo Dirty + Writeback)."""
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return sum(int(fields[key].split()[0]) for key in ("Dirty", "Writeback")) / 1024.0


def _drop_caches():
    """Write back and drop the page cache (root only: the cold restore rows need it)."""
    _sh("sync")
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        raise SystemExit("the cold restore rows drop the page cache, which needs root: %s" % exc)


def one_rep(rep_no, data, runner, conn, settle):
    """Both tools, ours first on even repetitions; {measure: (ours, theirs)} and our module's start-up."""
    root = os.path.join(data, "live-rep")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    os.chmod(root, 0o755)
    sides = {}
    try:
        for tool in (("ours", "theirs") if rep_no % 2 == 0 else ("theirs", "ours")):
            # the side that runs second must not pay for the writeback of the first side's gigabytes
            _sh("sync")
            time.sleep(settle)
            sides[tool] = run_side(Side(tool, root, runner), data, conn, rep_no)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = dict((key, (sides["ours"][key], sides["theirs"][key])) for key in sides["ours"])
    out["startup"] = _timed(runner.startup("qcow2_backup"), runner.env)[0]
    return out


def run_sparse(size, data, runner, conn, rep_no):
    """Our incremental after 1 GiB of guest writes (256 x 4 MiB, the same offsets in the first 10 GiB whatever the
    disk's size) on an empty disk of size bytes; seconds."""
    from live_helpers import domain_xml, remove_domain
    root = os.path.join(data, "sparse-rep")
    shutil.rmtree(root, ignore_errors=True)
    side = Side("ours", root, runner)
    os.makedirs(side.dir)
    os.chmod(root, 0o755)
    os.chmod(side.dir, 0o755)
    _sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", side.disk, str(size))
    dom = conn.defineXML(domain_xml(side.name, side.disk))
    try:
        dom.create()
        _timed(side.backup("full"), runner.env)
        _guest_writes(dom, random.Random(2000 + rep_no), 256, 4 * MiB, span=10 * GiB)
        seconds, stdout = _timed(side.backup("incremental"), runner.env)
        side.increment_bytes(1, stdout)
    finally:
        remove_domain(conn, side.name)
        shutil.rmtree(root, ignore_errors=True)
    return seconds


def measure_sparse(data, reps, runner, lock_path, show_pairs, settle):
    """The row: our increment of the same 1 GiB of changes on a 1 TiB and on a 10 GiB disk (both sparse)."""
    times = []
    for rep_no in range(reps):
        with _libvirt(lock_path) as conn:
            pair = {}
            for size in ((10 * GiB, 1 << 40) if rep_no % 2 == 0 else (1 << 40, 10 * GiB)):
                _sh("sync")
                time.sleep(settle)
                pair[size] = run_sparse(size, data, runner, conn, rep_no)
        times.append((pair[1 << 40], pair[10 * GiB]))
        if show_pairs:
            print("  sparse rep %d: 1 TiB %.3fs  10 GiB %.3fs" % (rep_no + 1, times[-1][0], times[-1][1]), flush=True)
    return {"operation": "live incremental of 1 GiB of writes: 1 TiB disk vs 10 GiB disk (ours)",
            "ours_s": statistics.median(t[0] for t in times), "theirs_s": statistics.median(t[1] for t in times),
            "ratio": statistics.median(a / b for a, b in times), "reps": reps, "sizes": True}


@contextlib.contextmanager
def _libvirt(lock_path):
    """A libvirtd (scripts/libvirt-up.sh, stopped after) and a connection, while holding lock_path."""
    import libvirt
    with SystemLock(lock_path):
        _sh("bash", os.path.join(REPO, "scripts", "libvirt-up.sh"))
        try:
            conn = libvirt.open(URI)
            try:
                yield conn
            finally:
                conn.close()
        finally:
            _sh("bash", os.path.join(REPO, "scripts", "libvirt-down.sh"))


def measure_live(data, reps, runner, lock_path=None, show_pairs=False, sparse_reps=0, settle=3.0):
    """The live rows (a list of dicts), every repetition in its own hold of lock_path."""
    if shutil.which("virtnbdbackup") is None:
        raise SystemExit("virtnbdbackup is not installed: run bench/setup.sh (make bench does)")
    build_disk(data)
    results = []
    for rep_no in range(reps):
        with _libvirt(lock_path) as conn:
            results.append(one_rep(rep_no, data, runner, conn, settle))
        if show_pairs:
            print("  live rep %d: %s" % (rep_no + 1, json.dumps(results[-1])), flush=True)
    rows = _rows(results) if results else []
    if sparse_reps:
        rows.append(measure_sparse(data, sparse_reps, runner, lock_path, show_pairs, settle))
    return rows


def _rows(results):
    startup = statistics.median(r["startup"] for r in results)
    rows = []
    for key, name in (("full", "live full, 4 GiB disk, 1 GiB data"),
                      ("inc", "live incremental after 256 MiB of guest writes"),
                      ("none", "live incremental, no change"),
                      ("restore_returned", "restore of the latest point, until the command returns"),
                      ("restore", "restore of the latest point, until the image can be opened"),
                      ("restore_cold_returned", "restore, cold page cache, until the command returns"),
                      ("restore_cold", "restore, cold page cache, until the image can be opened")):
        ours = [r[key][0] for r in results]
        theirs = [r[key][1] for r in results]
        nets = [r[key][0] - r["startup"] for r in results]
        rows.append({"operation": name, "ours_s": statistics.median(ours), "theirs_s": statistics.median(theirs),
                     "ratio": statistics.median(o / t for o, t in zip(ours, theirs)),
                     "startup_s": startup, "net_s": statistics.median(nets),
                     "net_ratio": statistics.median(n / t for n, t in zip(nets, theirs)), "reps": len(results)})
    for key, name in (("inc_bytes", "bytes stored, increment of 256 MiB of writes"),
                      ("none_bytes", "bytes stored, increment with no change")):
        ours = [r[key][0] for r in results]
        theirs = [r[key][1] for r in results]
        rows.append({"operation": name, "ours_bytes": statistics.median(ours), "theirs_bytes": statistics.median(theirs),
                     "ratio": statistics.median(o / t for o, t in zip(ours, theirs)), "reps": len(results)})
    return rows


def print_row(r):
    if "sizes" in r:
        print("%-48s 1 TiB %7.3fs  10 GiB %7.3fs  ratio %5.2f" % (r["operation"], r["ours_s"], r["theirs_s"], r["ratio"]),
              flush=True)
    elif "ours_bytes" in r:
        print("%-48s ours %12d B  virtnbdbackup %12d B  ratio %7.4f"
              % (r["operation"], r["ours_bytes"], r["theirs_bytes"], r["ratio"]), flush=True)
    else:
        print("%-48s ours %7.3fs (without start-up %7.3fs)  virtnbd* %7.3fs  ratio %5.2f (%5.2f)"
              % (r["operation"], r["ours_s"], r["net_s"], r["theirs_s"], r["ratio"], r["net_ratio"]), flush=True)


def live_table(rows):
    out = ["| operation | ours (s) | ours without module start-up (s) | virtnbdbackup / virtnbdrestore (s) "
           "| ratio ours/theirs | ratio without start-up |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        if "sizes" in r:
            out.append("| %s | 1 TiB: %.3f | | 10 GiB: %.3f | %.2f | |" % (r["operation"], r["ours_s"], r["theirs_s"], r["ratio"]))
        elif "ours_bytes" in r:
            out.append("| %s | %d B | | %d B | %.4f | |" % (r["operation"], r["ours_bytes"], r["theirs_bytes"], r["ratio"]))
        else:
            out.append("| %s | %.3f | %.3f | %.3f | %.2f | %.2f |"
                       % (r["operation"], r["ours_s"], r["net_s"], r["theirs_s"], r["ratio"], r["net_ratio"]))
    return "\n".join(out)
