# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine against qemu-img, side by side, on images this script builds itself.

Each operation runs as its own process on fresh copies of its inputs, alternating engine and qemu-img
runs (paired), several times. Printed per operation: median wall time of each, the median of the
paired ratios engine/qemu-img, and each side's peak RSS. Timings are for comparison on one machine,
not absolute figures: these machines are noisy, so nothing here is a pass/fail test.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import live_backup

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENGINE = [sys.executable, os.path.join(HERE, "engine_cli.py")]
MODULES = "ansible_collections.backingchain.qcow2.plugins.modules."
MiB = 1 << 20
GiB = 1 << 30


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def timed(cmd, cwd, env=None):
    """Wall seconds, peak RSS (MiB) and CPU seconds (user + system) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("command failed: %s" % " ".join(cmd))
    return elapsed, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def qemu_io(path, commands):
    """Run many qemu-io commands in batches (one process per batch)."""
    for i in range(0, len(commands), 400):
        args = ["qemu-io"]
        for c in commands[i:i + 400]:
            args += ["-c", c]
        sh(*args, path)


# ---- workload ----
def build_workload(d, quick):
    scale = 8 if quick else 1
    if os.path.exists(os.path.join(d, "ready")) and open(os.path.join(d, "ready")).read() == str(scale):
        return
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rnd = random.Random(42)
    size = 4 * GiB
    # base: 4 GiB virtual, 1 GiB of data in 4 MiB runs every 16 MiB
    sh("qemu-img", "create", "-q", "-f", "qcow2", os.path.join(d, "base.qcow2"), str(size))
    qemu_io(os.path.join(d, "base.qcow2"),
            ["write -P %d %d 4M" % (i % 250 + 1, i * 16 * MiB) for i in range(256 // scale)])
    # overlay: 512 MiB of scattered writes: 64 runs of 4 MiB and 4096 single 64 KiB clusters
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", os.path.join(d, "overlay.qcow2"))
    qemu_io(os.path.join(d, "overlay.qcow2"), overlay_commands(rnd, size, scale))
    # third layer: 128 MiB scattered
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "overlay.qcow2", "-F", "qcow2", os.path.join(d, "top.qcow2"))
    cmds = ["write -P %d %d 4M" % (0xC0 + i % 30, rnd.randrange(size // (4 * MiB)) * 4 * MiB) for i in range(16 // scale)]
    cmds += ["write -P %d %d 64k" % (0xE0 + i % 30, rnd.randrange(size // 65536) * 65536) for i in range(1024 // scale)]
    qemu_io(os.path.join(d, "top.qcow2"), cmds)
    # an unrelated base with the same content as base (a moved/copied base)
    sh("qemu-img", "convert", "-O", "qcow2", os.path.join(d, "base.qcow2"), os.path.join(d, "other.qcow2"))
    # a 1000-deep chain of small overlays
    deep = os.path.join(d, "deep")
    os.makedirs(deep)
    sh("qemu-img", "create", "-q", "-f", "qcow2", os.path.join(deep, "l0000.qcow2"), "1G")
    for i in range(1, 1000):
        # -u: don't open the (ever deeper) backing chain for every new layer
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "l%04d.qcow2" % (i - 1), "-F", "qcow2",
           os.path.join(deep, "l%04d.qcow2" % i), "1G")
    # 1 TiB virtual with 1 GiB of data, and an overlay on it
    sh("qemu-img", "create", "-q", "-f", "qcow2", os.path.join(d, "huge.qcow2"), "1T")
    qemu_io(os.path.join(d, "huge.qcow2"), ["write -P 7 %d 4M" % (i * 4 * GiB) for i in range(256 // scale)])
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "huge.qcow2", "-F", "qcow2", os.path.join(d, "huge-top.qcow2"))
    qemu_io(os.path.join(d, "huge-top.qcow2"), ["write -P 9 %d 1M" % (i * 16 * GiB + 5 * MiB) for i in range(64 // scale)])
    with open(os.path.join(d, "ready"), "w") as f:
        f.write(str(scale))


def build_extras(d, quick):
    """What the rows of module runs and the differing rebase need, built once next to the main workload."""
    scale = 8 if quick else 1
    marker = os.path.join(d, "ready-extras")
    if os.path.exists(marker) and open(marker).read() == str(scale):
        return
    rnd = random.Random(7)
    # an unrelated base whose data differs from base's in about half: every other 4 MiB run rewritten
    sh("qemu-img", "convert", "-O", "qcow2", os.path.join(d, "base.qcow2"), os.path.join(d, "other-half.qcow2"))
    qemu_io(os.path.join(d, "other-half.qcow2"),
            ["write -P %d %d 4M" % (0xF0 + i % 8, i * 16 * MiB) for i in range(0, 256 // scale, 2)])
    # an everyday chain: a 2 GiB disk, a base with 512 MiB of data, a middle layer of 64 x 4 MiB writes and a top of
    # 342 x 64 KiB (21 MiB)
    size = 2 * GiB
    base, mid, top = (os.path.join(d, "day-%s.qcow2" % n) for n in ("base", "mid", "top"))
    sh("qemu-img", "create", "-q", "-f", "qcow2", base, str(size))
    qemu_io(base, ["write -P %d %d 4M" % (i % 250 + 1, i * 16 * MiB) for i in range(128 // scale)])
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "day-base.qcow2", "-F", "qcow2", mid)
    qemu_io(mid, ["write -P %d %d 4M" % (0x40 + i % 50, rnd.randrange(size // (4 * MiB)) * 4 * MiB)
                  for i in range(64 // scale)])
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "day-mid.qcow2", "-F", "qcow2", top)
    qemu_io(top, ["write -P %d %d 64k" % (0x80 + i % 50, rnd.randrange(size // 65536) * 65536) for i in range(342)])
    sh("qemu-img", "create", "-q", "-f", "qcow2", os.path.join(d, "tiny.qcow2"), "64M")
    qemu_io(os.path.join(d, "tiny.qcow2"), ["write -P 1 0 1M"])
    with open(marker, "w") as f:
        f.write(str(scale))


def build_store(d, quick, runner):
    """store/: a backup store holding a full of a copy of base.qcow2 and an increment after 256 MiB of scattered
    64 KiB writes."""
    scale = 8 if quick else 1
    marker = os.path.join(d, "ready-store")
    store, source = os.path.join(d, "store"), os.path.join(d, "store-source.qcow2")
    if os.path.exists(marker) and open(marker).read() == str(scale) and os.path.isdir(store):
        return
    shutil.rmtree(store, ignore_errors=True)
    os.makedirs(store)
    sh("qemu-img", "convert", "-O", "qcow2", os.path.join(d, "base.qcow2"), source)
    subprocess.run(runner.store_command("backup", store, source), check=True, env=runner.env)
    rnd = random.Random(11)
    qemu_io(source, ["write -P %d %d 64k" % (0x90 + i % 50, rnd.randrange(4 * GiB // 65536) * 65536)
                     for i in range(4096 // scale)])
    subprocess.run(runner.store_command("backup", store, source), check=True, env=runner.env)
    with open(marker, "w") as f:
        f.write(str(scale))


def overlay_commands(rnd, size, scale):
    cmds = ["write -P %d %d 4M" % (0x40 + i % 50, rnd.randrange(size // (4 * MiB)) * 4 * MiB) for i in range(64 // scale)]
    cmds += ["write -P %d %d 64k" % (0x80 + i % 50, rnd.randrange(size // 65536) * 65536) for i in range(4096 // scale)]
    return cmds


def build_tracked(d, quick):
    """tracked.qcow2: the overlay's writes again, into an overlay whose persistent bitmap 'chk' records them (the
    changes an incremental backup copies)."""
    path = os.path.join(d, "tracked.qcow2")
    if os.path.exists(path):
        return
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", path + ".tmp")
    sh("qemu-img", "bitmap", "--add", path + ".tmp", "chk")
    qemu_io(path + ".tmp", overlay_commands(random.Random(42), 4 * GiB, 8 if quick else 1))
    os.rename(path + ".tmp", path)


def fresh(src_dir, work, names):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    for n in names:
        sh("cp", "-r", "--sparse=always", os.path.join(src_dir, n), os.path.join(work, n))
    sh("sync")


OPERATIONS = [
    # name, input files, engine command, qemu-img command, output file to verify against the inputs' view
    ("commit (overlay 512 MiB -> base)", ["base.qcow2", "overlay.qcow2"],
     ENGINE + ["commit", "overlay.qcow2"], ["qemu-img", "commit", "-q", "overlay.qcow2"]),
    ("flatten 3-layer chain", ["base.qcow2", "overlay.qcow2", "top.qcow2"],
     ENGINE + ["convert", "top.qcow2", "out.qcow2"], ["qemu-img", "convert", "-O", "qcow2", "top.qcow2", "out.qcow2"]),
    # qemu-img convert's default cache mode is unsafe (the new image is never flushed); the engine flushes it
    # before renaming it into place: this row compares with qemu-img flushing too
    ("flatten 3-layer chain, qemu-img -t writeback", ["base.qcow2", "overlay.qcow2", "top.qcow2"],
     ENGINE + ["convert", "top.qcow2", "out.qcow2"],
     ["qemu-img", "convert", "-t", "writeback", "-O", "qcow2", "top.qcow2", "out.qcow2"]),
    ("flatten compressed (-c)", ["base.qcow2", "overlay.qcow2", "top.qcow2"],
     ENGINE + ["convert", "top.qcow2", "out.qcow2", "-c"],
     ["qemu-img", "convert", "-c", "-O", "qcow2", "top.qcow2", "out.qcow2"]),
    ("safe rebase onto unrelated base", ["base.qcow2", "overlay.qcow2", "other.qcow2"],
     ENGINE + ["rebase", "overlay.qcow2", "other.qcow2"],
     ["qemu-img", "rebase", "-q", "-b", "other.qcow2", "-F", "qcow2", "overlay.qcow2"]),
    # an incremental backup's copy: the 512 MiB a bitmap marks, into a new layer over the previous point (base);
    # qemu-img's nearest: convert -B, the overlay's own clusters into a new layer over the same backing file
    ("incremental: 512 MiB dirty -> new layer", ["base.qcow2", "tracked.qcow2"],
     ENGINE + ["incremental", "tracked.qcow2", "chk", "inc.qcow2", "base.qcow2"],
     ["qemu-img", "convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "tracked.qcow2", "inc.qcow2"]),
    ("incremental: 512 MiB dirty, qemu-img -t writeback", ["base.qcow2", "tracked.qcow2"],
     ENGINE + ["incremental", "tracked.qcow2", "chk", "inc.qcow2", "base.qcow2"],
     ["qemu-img", "convert", "-t", "writeback", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "tracked.qcow2",
      "inc.qcow2"]),
    ("rebase onto base in same chain", ["base.qcow2", "overlay.qcow2", "top.qcow2"],
     ENGINE + ["rebase", "top.qcow2", "base.qcow2"],
     ["qemu-img", "rebase", "-q", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"]),
]

# Added with the module rows; kept apart so that OPERATIONS stays comparable with earlier versions of this script.
DIFFERING_OPERATIONS = [
    ("safe rebase onto unrelated base, half its data differs", ["base.qcow2", "overlay.qcow2", "other-half.qcow2"],
     ENGINE + ["rebase", "overlay.qcow2", "other-half.qcow2"],
     ["qemu-img", "rebase", "-q", "-b", "other-half.qcow2", "-F", "qcow2", "overlay.qcow2"]),
]

DAY_CHAIN = ["day-base.qcow2", "day-mid.qcow2", "day-top.qcow2"]

# Modules run as Ansible runs them on the target: one Python process per task (AnsiballZ aside: it imports the same
# code from a zip). name, inputs (copied fresh into work/ when given), module, its arguments (paths relative to the
# run's directory), qemu-img command. The baseline is what the run pays before it does any work.
MODULE_OPERATIONS = [
    ("module start-up: qcow2_info, small image", [], "qcow2_info", {"path": "tiny.qcow2"},
     ["qemu-img", "info", "--output=json", "tiny.qcow2"]),
    ("module start-up: qcow2_image, nothing to change", [], "qcow2_image", {"path": "tiny.qcow2", "size": "64M"},
     ["qemu-img", "info", "--output=json", "tiny.qcow2"]),
    ("module: commit of a 21 MiB overlay", DAY_CHAIN, "qcow2_commit", {"path": "day-top.qcow2"},
     ["qemu-img", "commit", "-q", "day-top.qcow2"]),
    ("module: rebase of a small top onto the base in its chain", DAY_CHAIN, "qcow2_rebase",
     {"path": "day-top.qcow2", "backing_file": "day-base.qcow2"},
     ["qemu-img", "rebase", "-q", "-b", "day-base.qcow2", "-F", "qcow2", "day-top.qcow2"]),
]

# The backup store's merge of one increment into its full (retention keeping one point), against qemu-img commit of
# the same layer into the same full. The store: a 4 GiB disk with 1 GiB of data, a full, then an increment after
# 256 MiB of scattered 64 KiB guest writes (built once by build_store, through the module_utils).
STORE_CODE = {
    "backup": "import sys; from %s_backup.backup import Request, run_backup; run_backup(Request(sys.argv[1], sys.argv[2]))",
    "merge": "import sys; from %s_backup.backup import retain; retain(sys.argv[1], keep=1)",
}
MERGE_OPERATIONS = [
    ("backup store: merge one increment (256 MiB scattered) into its full", ["store"], "merge",
     ["qemu-img", "commit", "-q", "store/chain-0001/0001.qcow2"]),
]

NO_COPY_OPERATIONS = [
    ("info, 1000-deep chain", "deep", ENGINE + ["info", "l0999.qcow2"],
     ["qemu-img", "info", "--backing-chain", "--output=json", "l0999.qcow2"]),
]

HUGE_OPERATIONS = [
    ("1 TiB: read all data", ["huge.qcow2"], ENGINE + ["read-all", "huge.qcow2"],
     ["qemu-img", "convert", "-O", "raw", "huge.qcow2", "out.raw"]),
    ("1 TiB: check", [], ENGINE + ["check", "huge.qcow2"], ["qemu-img", "check", "huge.qcow2"]),
    ("1 TiB: info", [], ENGINE + ["info", "huge-top.qcow2"], ["qemu-img", "info", "--backing-chain", "huge-top.qcow2"]),
    ("1 TiB: commit overlay", ["huge.qcow2", "huge-top.qcow2"], ENGINE + ["commit", "huge-top.qcow2"],
     ["qemu-img", "commit", "-q", "huge-top.qcow2"]),
    ("1 TiB: flatten", ["huge.qcow2", "huge-top.qcow2"], ENGINE + ["convert", "huge-top.qcow2", "out.qcow2"],
     ["qemu-img", "convert", "-O", "qcow2", "huge-top.qcow2", "out.qcow2"]),
    ("1 TiB: internal snapshot", ["huge.qcow2"], ENGINE + ["snapshot", "huge.qcow2", "s1"],
     ["qemu-img", "snapshot", "-c", "s1", "huge.qcow2"]),
]


class ModuleRunner:
    """Commands that run a module of this checkout as its own process, importing it as ansible_collections.*
    through a temporary collection root (a symlink to the checkout). Bytecode is cached as for any installed
    Python code, ansible.module_utils.basic included, so start-up compares like with like."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="backingchain-bench-")
        link = os.path.join(self.root, "ansible_collections", "backingchain", "qcow2")
        os.makedirs(os.path.dirname(link))
        os.symlink(REPO, link)
        self.env = dict(os.environ, PYTHONPATH=self.root)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def command(self, module, args, cwd):
        """The command running module with args (relative paths resolved against cwd)."""
        args = dict((k, os.path.join(cwd, v) if k in ("path", "backing_file") else v) for k, v in args.items())
        args_file = os.path.join(self.root, "%s-args.json" % module)
        with open(args_file, "w") as f:
            json.dump({"ANSIBLE_MODULE_ARGS": args}, f)
        return [sys.executable, "-m", MODULES + module, args_file]

    def store_command(self, what, *args):
        """A backup store operation (STORE_CODE) of this checkout's module_utils, as its own process."""
        return [sys.executable, "-c", STORE_CODE[what] % MODULES.replace("plugins.modules.", "plugins.module_utils.")] + list(args)

    def startup(self, module):
        """What every run of module pays before its work: the interpreter, runpy (which ``-m`` uses), Ansible's
        module_utils and the module's own imports, and the interpreter's exit after them (the code it imports only
        for the work it does is not included)."""
        return [sys.executable, "-c", "import runpy, " + MODULES + module]

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def measure(name, data, inputs, engine_cmd, qemu_cmd, reps, cwd_name=None, show_pairs=False, settle=0.0,
            baseline_cmd=None, env=None):
    """Paired runs of engine_cmd and qemu_cmd (and baseline_cmd, when given, whose time the row reports too).

    The order of the sides rotates from one repetition to the next, so that none always runs first or right after
    another; every side (the baseline too) starts from the same state: fresh copies of the inputs, synced, then
    ``settle`` seconds of quiet."""
    work = os.path.join(data, "work")
    sides = ["engine", "qemu"] + (["baseline"] if baseline_cmd is not None else [])
    commands = {"engine": engine_cmd, "qemu": qemu_cmd, "baseline": baseline_cmd}
    runs = {side: [] for side in sides}  # (wall s, peak RSS MiB, CPU s) per repetition
    for rep in range(reps):
        turn = rep % len(sides)
        for side in sides[turn:] + sides[:turn]:
            if inputs:
                fresh(data, work, inputs)
                # On the test VMs a write that starts right after files were deleted and synced is sometimes
                # several times faster than one that starts seconds later (the storage below discards the
                # freed blocks meanwhile), which made paired runs bimodal: let every run start settled.
                time.sleep(settle)
                cwd = work
            else:
                cwd = os.path.join(data, cwd_name) if cwd_name else data
            runs[side].append(timed(commands[side], cwd, None if side == "qemu" else env))
        if show_pairs:
            print("  pair %d: %s" % (rep + 1, "  ".join("%s %.3fs" % (side, runs[side][-1][0]) for side in sides)),
                  flush=True)
    eng_t, qemu_t = [r[0] for r in runs["engine"]], [r[0] for r in runs["qemu"]]
    row = {"operation": name, "engine_s": statistics.median(eng_t), "qemu_s": statistics.median(qemu_t),
           "ratio": statistics.median([e / q for e, q in zip(eng_t, qemu_t)]),
           "engine_rss_mib": max(r[1] for r in runs["engine"]), "qemu_rss_mib": max(r[1] for r in runs["qemu"])}
    if baseline_cmd is not None:
        base_t = [r[0] for r in runs["baseline"]]
        nets = [e - b for e, b in zip(eng_t, base_t)]
        net_ratios = sorted(n / q for n, q in zip(nets, qemu_t))
        cpu = dict((side, [r[2] for r in runs[side]]) for side in sides)
        cpu_nets = [e - b for e, b in zip(cpu["engine"], cpu["baseline"])]
        row.update(baseline_s=statistics.median(base_t), net_s=statistics.median(nets),
                   net_ratio=statistics.median(net_ratios), net_ratio_quartiles=_quartiles(net_ratios),
                   engine_cpu_s=statistics.median(cpu["engine"]), baseline_cpu_s=statistics.median(cpu["baseline"]),
                   qemu_cpu_s=statistics.median(cpu["qemu"]), net_cpu_s=statistics.median(cpu_nets),
                   net_cpu_ratio=statistics.median([n / q for n, q in zip(cpu_nets, cpu["qemu"])]), reps=reps)
    return row


def _quartiles(values):
    """(first, third) quartile of values: the middle half of the paired ratios, to show how much they spread."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (None, None)
    cuts = statistics.quantiles(values, n=4)
    return cuts[0], cuts[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="/var/tmp/backingchain-bench", help="where the workload is built")
    parser.add_argument("--reps", type=int, default=5, help="paired runs per operation")
    parser.add_argument("--module-reps", type=int, default=11,
                        help="runs of each side per module row (their differences are a few tens of ms: more runs)")
    parser.add_argument("--quick", action="store_true", help="an 8x smaller workload, for a smoke run")
    parser.add_argument("--only", help="run only operations whose name contains this text (\"live\": only the live backup rows)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--pairs", action="store_true", help="print every paired run, not only the medians")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after preparing the inputs of a run, before timing it")
    parser.add_argument("--live-reps", type=int, default=3,
                        help="repetitions of the live backup rows against virtnbdbackup (0: none; they need root)")
    parser.add_argument("--sparse-reps", type=int, default=3,
                        help="repetitions of the live row comparing an increment on a 1 TiB and a 10 GiB disk")
    parser.add_argument("--lock", help="a file to flock while libvirtd runs for the live rows (a shared host)")
    args = parser.parse_args()
    if args.only and "live" in args.only:
        _print_live(_measure_live(args), args)
        return
    rows = []
    print("building the workload in %s ..." % args.dir, flush=True)
    build_workload(args.dir, args.quick)
    build_extras(args.dir, args.quick)
    build_tracked(args.dir, args.quick)
    for name, inputs, eng, qemu in OPERATIONS + DIFFERING_OPERATIONS:
        if not args.only or args.only in name:
            rows.append(measure(name, args.dir, inputs, eng, qemu, args.reps, show_pairs=args.pairs, settle=args.settle))
            _print_row(rows[-1])
    for name, cwd_name, eng, qemu in NO_COPY_OPERATIONS:
        if not args.only or args.only in name:
            rows.append(measure(name, args.dir, [], eng, qemu, args.reps, cwd_name, args.pairs))
            _print_row(rows[-1])
    for name, inputs, eng, qemu in HUGE_OPERATIONS:
        if not args.only or args.only in name:
            rows.append(measure(name, args.dir, inputs, eng, qemu, max(1, args.reps // 2), show_pairs=args.pairs,
                                settle=args.settle))
            _print_row(rows[-1])
    module_rows = _measure_modules(args)
    rows += _measure_merges(args)
    live_rows = _measure_live(args)
    print()
    print(table(rows))
    if module_rows:
        print()
        print(module_table(module_rows))
    _print_live(live_rows, args, rows + module_rows)


def _print_live(live_rows, args, other_rows=()):
    if live_rows:
        print()
        print(live_backup.live_table(live_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(list(other_rows) + live_rows, f, indent=2)


def _measure_live(args):
    """qcow2_backup of a running domain against virtnbdbackup (bench/live_backup.py): root and libvirtd only."""
    if args.live_reps + args.sparse_reps <= 0 or (args.only and "live" not in args.only):
        return []
    if os.geteuid() != 0:
        print("live backup rows skipped: they start libvirtd and domains, and need root", flush=True)
        return []
    runner = ModuleRunner()
    try:
        rows = live_backup.measure_live(os.path.join(args.dir, "live"), args.live_reps, runner, args.lock,
                                        args.pairs, args.sparse_reps, args.settle)
    finally:
        runner.close()
    for row in rows:
        live_backup.print_row(row)
    return rows


def _measure_modules(args):
    runner = ModuleRunner()
    rows = []
    try:
        bare = [sys.executable, "-c", "import ansible.module_utils.basic"]
        for name, inputs, module, module_args, qemu in MODULE_OPERATIONS:
            if args.only and args.only not in name:
                continue
            cwd = os.path.join(args.dir, "work") if inputs else args.dir
            # start-up rows: against the bare import of Ansible's module_utils (the floor of any module run);
            # the others: against the module's own start-up
            baseline = bare if name.startswith("module start-up") else runner.startup(module)
            rows.append(measure(name, args.dir, inputs, runner.command(module, module_args, cwd), qemu, args.module_reps,
                                show_pairs=args.pairs, settle=args.settle if inputs else 0.0, baseline_cmd=baseline,
                                env=runner.env))
            _print_row(rows[-1])
    finally:
        runner.close()
    return rows


def _measure_merges(args):
    runner = ModuleRunner()
    rows = []
    try:
        for name, inputs, what, qemu in MERGE_OPERATIONS:
            if args.only and args.only not in name:
                continue
            build_store(args.dir, args.quick, runner)
            rows.append(measure(name, args.dir, inputs, runner.store_command(what, "store"), qemu, args.reps,
                                show_pairs=args.pairs, settle=args.settle, env=runner.env))
            _print_row(rows[-1])
    finally:
        runner.close()
    return rows


def _print_row(r):
    print("%-36s engine %7.3fs  qemu-img %7.3fs  ratio %5.2f  RSS engine %6.1f MiB  qemu-img %6.1f MiB"
          % (r["operation"], r["engine_s"], r["qemu_s"], r["ratio"], r["engine_rss_mib"], r["qemu_rss_mib"]), flush=True)
    if "baseline_s" in r:
        print("%-36s baseline %7.3fs  module - baseline %7.3fs  ratio (module - baseline)/qemu-img %5.2f "
              "(middle half %.2f-%.2f, %d runs each)"
              % ("", r["baseline_s"], r["net_s"], r["net_ratio"], r["net_ratio_quartiles"][0],
                 r["net_ratio_quartiles"][1], r["reps"]), flush=True)
        print("%-36s CPU: module %.3fs  baseline %.3fs  qemu-img %.3fs  (module - baseline)/qemu-img %5.2f"
              % ("", r["engine_cpu_s"], r["baseline_cpu_s"], r["qemu_cpu_s"], r["net_cpu_ratio"]), flush=True)


def table(rows):
    out = ["| operation | engine (s) | qemu-img (s) | ratio engine/qemu-img | engine peak RSS (MiB) | qemu-img peak RSS (MiB) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        values = (r["operation"], r["engine_s"], r["qemu_s"], r["ratio"], r["engine_rss_mib"], r["qemu_rss_mib"])
        out.append("| %s | %.3f | %.3f | %.2f | %.1f | %.1f |" % values)
    return "\n".join(out)


def module_table(rows):
    out = ["| operation | module (s) | baseline (s) | module - baseline (s) | qemu-img (s) | ratio module/qemu-img "
           "| ratio (module - baseline)/qemu-img (middle half) | the same in CPU time |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        values = (r["operation"], r["engine_s"], r["baseline_s"], r["net_s"], r["qemu_s"], r["ratio"], r["net_ratio"],
                  r["net_ratio_quartiles"][0], r["net_ratio_quartiles"][1], r["net_cpu_ratio"])
        out.append("| %s | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f (%.2f-%.2f) | %.2f |" % values)
    return "\n".join(out)


if __name__ == "__main__":
    main()
