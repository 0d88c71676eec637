"""What the crash tests check after every crash, and a module run in a child process with the crash hook.

chains.run_engine() runs one api entry point in a child; run_module() here runs a whole module
(plan, apply, atomic rename: what a task does) the same way, through the unit tests' in-process
harness, optionally with BACKINGCHAIN_QCOW2_CRASH_AT=N.

After a crash the tests check, besides "no corruption" and "the guest view is the one before or
after": engine_repair_is_clean() - the engine's own check (repair all) on a copy of the crashed
images leaves qemu-img check with nothing to report (no leak either) and every view unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import typing as t
from pathlib import Path

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import copy_images, run_child, same_view
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import StrPath, qemu_img, qemu_img_check, qemu_img_json

KILLED = -9

_MODULE_RUNNER = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.backingchain.qcow2.tests.unit.plugins.modules import harness
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import testhooks
module = importlib.import_module("ansible_collections.backingchain.qcow2.plugins.modules." + sys.argv[2])
result = harness.run_module(module, json.loads(sys.argv[3]))
print(json.dumps({"events": testhooks.io_event_count(), "result": result}, default=str))
"""


def run_module(module: str, args: dict[str, t.Any], crash_at: int | None = None,
               cwd: StrPath | None = None) -> subprocess.CompletedProcess:
    """Run a module (plugins/modules/<module>.py main()) in a child Python; crash_at=N kills it at its Nth I/O event.

    The child prints {"events": n, "result": the module's result} when it is not killed.
    """
    return run_child(_MODULE_RUNNER, [module, json.dumps(args)], crash_at=crash_at, cwd=cwd)


def module_result(module: str, args: dict[str, t.Any], cwd: StrPath | None = None) -> tuple[dict, int]:
    """(the module's result, the I/O events it issued) of an uninterrupted run."""
    proc = run_module(module, args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    return out['result'], out['events']


def snapshot_names(path: StrPath) -> list[str]:
    """The internal snapshots' names, in table order, as qemu-img reads them."""
    info = qemu_img_json('info', '-U', path)
    return [sn['name'] for sn in info.get('snapshots', [])]


def snapshot_view(path: StrPath, name: str, dest_dir: StrPath) -> Path:
    """The guest view an internal snapshot holds, as a raw file (qemu-img convert -l snapshot.name=NAME)."""
    out = Path(dest_dir) / ('%s.%s.raw' % (Path(path).name, name))
    qemu_img('convert', '-U', '-O', 'raw', '-l', 'snapshot.name=%s' % name, path, out)
    return out


def engine_repair_is_clean(directory: StrPath, images: t.Iterable[StrPath], views: dict[str, StrPath],
                           scratch: StrPath, snapshots: dict[str, dict[str, StrPath]] | None = None) -> int:
    """Repair a copy of the crashed images with the engine's check (repair all): afterwards qemu-img check finds
    nothing at all (no corruption, no leak) and each view is unchanged.

    views: image file name -> the raw view its chain must show; snapshots: image file name -> {snapshot name:
    raw view} for the internal snapshots that must still read the same. Returns how many images needed a repair.
    """
    copy = Path(scratch) / 'repaired'
    if copy.exists():
        shutil.rmtree(copy)
    copy_images(directory, copy)
    repaired = 0
    for image in images:
        target = copy / Path(image).name
        if qemu_img_check(target).clean:
            continue
        report = api.check(str(target), repair='all')
        assert report['exit_code'] == 0, (target, report)
        after = qemu_img_check(target)
        assert after.clean, (target, after)
        repaired += 1
    for name, view in views.items():
        assert same_view(copy / name, view), ('view changed by the repair', name)
    for name, named in (snapshots or {}).items():
        for snap, view in named.items():
            assert same_view(snapshot_view(copy / name, snap, scratch), view), ('snapshot changed by the repair', snap)
    shutil.rmtree(copy)
    return repaired


def leftovers(directory: StrPath, name: str) -> list[str]:
    """Temporary files (.NAME.*.tmp, and the engine's own beside them) an interrupted build of NAME left."""
    return sorted(e for e in os.listdir(directory)
                  if e.endswith('.tmp') and (e.startswith('.%s.' % name) or e.startswith('..%s.' % name)))
