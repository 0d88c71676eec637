"""Backing chains built with qemu-img/qemu-io for the chain-operation tests, and the engine run in a child process.

A chain is described bottom first as Layer entries; build_chain() creates
each layer with qemu-img (backing names relative, so a copied directory is
an independent chain), then runs its steps: qemu-io commands, or
'snapshot NAME' for an internal snapshot (qemu-img snapshot -c).

run_engine() runs one api entry point in a fresh Python process, optionally
with BACKINGCHAIN_QCOW2_CRASH_AT=N so the engine kills itself (SIGKILL) at
its Nth write, flush or truncate; the dry run reports how many it issued.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import typing as t
from pathlib import Path

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers import fork_server
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    StrPath,
    qemu_compare,
    qemu_img,
    qemu_img_check,
    qemu_img_create,
    qemu_io,
    raw_of,
)

KiB = 1024
MiB = 1024 * 1024

# the directory holding ansible_collections/, so a child process imports the same engine
COLLECTIONS_ROOT = str(Path(api.__file__).parents[6])


class Layer(t.NamedTuple):
    """One image of a chain (bottom first in a chain description)."""

    name: str
    size: int | str | None = None  # None: as large as its backing file
    fmt: str = 'qcow2'
    options: dict[str, t.Any] = {}
    steps: tuple[str, ...] = ()  # qemu-io commands, or 'snapshot NAME'


def build_chain(directory: StrPath, layers: t.Sequence[Layer]) -> list[Path]:
    """Create the layers (bottom first) in directory; return their paths top first."""
    directory = Path(directory)
    below: Layer | None = None
    for layer in layers:
        qemu_img_create(directory / layer.name, layer.size, fmt=layer.fmt,
                        backing=below.name if below else None, backing_fmt=below.fmt if below else None,
                        options=layer.options or None, cwd=directory)
        for step in layer.steps:
            if step.startswith('snapshot '):
                qemu_img('snapshot', '-c', step.split(' ', 1)[1], layer.name, cwd=directory)
            else:
                qemu_io(layer.name, step, fmt=layer.fmt, cwd=directory)
        below = layer
    return [directory / layer.name for layer in reversed(layers)]


def copy_images(src: StrPath, dest: StrPath) -> Path:
    """Copy every file of src into the new directory dest, keeping holes."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    for entry in sorted(Path(src).iterdir()):
        if entry.is_file():
            subprocess.run(['cp', '--sparse=always', str(entry), str(dest / entry.name)], check=True)
    return dest


def formats(layers: t.Sequence[Layer]) -> dict[str, str]:
    return {layer.name: layer.fmt for layer in layers}


def assert_clean(paths: t.Iterable[StrPath], fmts: dict[str, str] | None = None, leaks_ok: bool = False) -> None:
    """qemu-img check finds no corruption (and no leak unless leaks_ok) in every qcow2 image given."""
    for path in paths:
        fmt = (fmts or {}).get(Path(path).name, 'qcow2')
        if fmt != 'qcow2':
            continue
        result = qemu_img_check(path)
        assert not result.report.get('corruptions') and not result.report.get('check-errors'), (path, result)
        if not leaks_ok:
            assert result.clean, (path, result)


def same_view(a: StrPath, b: StrPath) -> bool:
    """Same guest content (a size difference only where the longer one reads zeros, as qemu-img compare)."""
    return qemu_compare(a, b)


def view_of(path: StrPath, dest_dir: StrPath) -> Path:
    """The guest view of path (its whole chain) as a raw file in dest_dir."""
    return raw_of(path, dest_dir=dest_dir)


def file_states(directory: StrPath) -> dict[str, tuple[int, int]]:
    """name -> (mtime_ns, size) of every file of a directory."""
    out = {}
    for entry in Path(directory).iterdir():
        st = entry.stat()
        out[entry.name] = (st.st_mtime_ns, st.st_size)
    return out


_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api, testhooks
result = getattr(api, sys.argv[2])(**json.loads(sys.argv[3]))
result = result._asdict() if hasattr(result, "_asdict") else result  # the engine's records as plain dicts
print(json.dumps({"events": testhooks.io_event_count(), "result": result}, default=str))
"""


def run_child(runner: str, args: t.Sequence[str], crash_at: int | None = None,
              cwd: StrPath | None = None) -> subprocess.CompletedProcess:
    """Run a Python snippet (argv: collections root, then args) in a child; crash_at=N arms the crash hook.

    The child is forked from a server that has the engine imported (tests/helpers/fork_server.py): a crash sweep
    runs one per I/O event, and a fresh interpreter would spend most of a short child's CPU importing."""
    env = dict(os.environ)
    env.pop('BACKINGCHAIN_QCOW2_CRASH_AT', None)
    if crash_at:
        env['BACKINGCHAIN_QCOW2_CRASH_AT'] = str(crash_at)
    return fork_server.run(runner, [COLLECTIONS_ROOT] + list(args), env, cwd, COLLECTIONS_ROOT)


def run_engine(op: str, kwargs: dict[str, t.Any], crash_at: int | None = None,
               cwd: StrPath | None = None) -> subprocess.CompletedProcess:
    """Run api.<op>(**kwargs) in a child Python; crash_at=N makes it SIGKILL itself at its Nth I/O event."""
    return run_child(_RUNNER, [op, json.dumps(kwargs)], crash_at=crash_at, cwd=cwd)


def start_engine(op: str, kwargs: dict[str, t.Any], cwd: StrPath | None = None,
                 io_hold: StrPath | None = None) -> subprocess.Popen:
    """Start api.<op>(**kwargs) in a child Python without waiting (for killing it at a random moment);
    io_hold (a file) holds it before each write, flush or truncate for as long as that file exists."""
    env = dict(os.environ)
    env.pop('BACKINGCHAIN_QCOW2_CRASH_AT', None)
    env['BACKINGCHAIN_QCOW2_IO_HOLD'] = str(io_hold or '')
    return subprocess.Popen([sys.executable, '-c', _RUNNER, COLLECTIONS_ROOT, op, json.dumps(kwargs)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count_events(op: str, kwargs: dict[str, t.Any], cwd: StrPath | None = None) -> int:
    """The number of writes, flushes and truncates the operation issues when nothing interrupts it."""
    proc = run_engine(op, kwargs, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)['events']


def fill_filesystem(directory: StrPath, leave: int) -> None:
    """Use up the free space of directory's filesystem but about ``leave`` bytes (a file named 'filler')."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free > leave:
        with open(Path(directory) / 'filler', 'wb') as f:
            os.posix_fallocate(f.fileno(), 0, free - leave)


def file_digests(directory: StrPath) -> dict[str, str]:
    """name -> sha256 of every file of a directory."""
    out = {}
    for entry in sorted(Path(directory).iterdir()):
        if entry.is_file():
            with open(entry, 'rb') as f:
                out[entry.name] = hashlib.sha256(f.read()).hexdigest()
    return out


def reset_dir(directory: StrPath, pristine: StrPath) -> None:
    """Make directory an exact copy of pristine again."""
    shutil.rmtree(directory)
    copy_images(pristine, directory)


# ---- the chains every operation is checked on -------------------------------------------------------------------

BASE_STEPS = ('write -P 0x11 0 1M', 'write -P 0x12 3M 1536k', 'write -P 0x13 5243392 3k')
MID_STEPS = ('write -P 0x21 512k 1M', 'write -z 3200k 640k', 'write -P 0x22 4608k 8k', 'write -P 0x23 5M 2k')
TOP_STEPS = ('write -P 0x31 60k 8k', 'write -z 0 4k', 'write -z 1M 1M', 'write -P 0x32 6M 700k',
             'write -P 0x33 8M 512')
BASE_SIZE = 6 * MiB
TOP_SIZE = 8 * MiB + 512  # larger than its backing files: commit grows the base; not cluster aligned


def _three(opts_base: dict, opts_mid: dict, opts_top: dict, base_fmt: str = 'qcow2',
           base_steps: tuple[str, ...] = BASE_STEPS, top_steps: tuple[str, ...] = TOP_STEPS) -> list[Layer]:
    base_name = 'base.qcow2' if base_fmt == 'qcow2' else 'base.raw'
    return [
        Layer(base_name, BASE_SIZE, base_fmt, opts_base, base_steps),
        Layer('mid.qcow2', None, 'qcow2', opts_mid, MID_STEPS),
        Layer('top.qcow2', TOP_SIZE, 'qcow2', opts_top, top_steps),
    ]


def _same(**opts: t.Any) -> tuple[dict, dict, dict]:
    return opts, opts, opts


STANDARD_CHAINS: dict[str, t.Callable[[], list[Layer]]] = {
    'c64k-v3': lambda: _three(*_same()),
    'c512-v3': lambda: _three(*_same(cluster_size=512)),
    'c4k-v2': lambda: _three(*_same(cluster_size=4096, compat='0.10')),
    'c2M-v3': lambda: _three(*_same(cluster_size=2 * MiB)),
    'c64k-extl2': lambda: _three(*_same(extended_l2='on')),
    'mixed-clusters': lambda: _three({'cluster_size': 2 * MiB}, {'cluster_size': 512, 'compat': '0.10'},
                                     {'cluster_size': 4096}),
    'raw-base': lambda: _three({}, {'cluster_size': 4096}, {}, base_fmt='raw'),
    'snapshots': lambda: _three(*_same(), base_steps=BASE_STEPS + ('snapshot sb', 'write -P 0x14 256k 512k'),
                                top_steps=TOP_STEPS[:2] + ('snapshot st',) + TOP_STEPS[2:]),
    # shorter than the layers around it (qemu iotest 274): past its end the layers above read zeros, not the base
    'short-mid': lambda: [Layer('base.qcow2', BASE_SIZE, 'qcow2', {}, BASE_STEPS + ('write -P 0x15 2M 1M',)),
                          Layer('mid.qcow2', 2 * MiB, 'qcow2', {'cluster_size': 4096}, MID_STEPS[:1]),
                          Layer('top.qcow2', TOP_SIZE, 'qcow2', {'cluster_size': 4096}, TOP_STEPS)],
    'two-deep': lambda: [Layer('base.qcow2', BASE_SIZE, 'qcow2', {'cluster_size': 4096}, BASE_STEPS + MID_STEPS),
                         Layer('top.qcow2', TOP_SIZE, 'qcow2', {'cluster_size': 4096}, TOP_STEPS)],
}

# the standard chains with three images (base, mid, top)
THREE_DEEP = [name for name, make in STANDARD_CHAINS.items() if len(make()) == 3]
