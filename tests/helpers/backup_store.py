"""Backup stores for the store's tests: runs in a child process that may SIGKILL itself, and what must hold after.

run_store_op() runs one store operation (a backup point, or retention alone) in a child Python; crash_at=N
kills it at its Nth event: the engine's writes, flushes and truncates (BACKINGCHAIN_QCOW2_CRASH_AT) and, in
the child only, the moments just before and just after each manifest replacement.

assert_store_sound() is the invariant: every sealed point of the manifest is a layer that qemu-img check finds
clean, that qemu-img and the engine both read (through its relative backing chain) as the source did when the
point was taken, and that the engine restores to the same view.
"""

from __future__ import annotations

import json
import os
import subprocess
import typing as t
from pathlib import Path

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import restore
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.digests import side_path
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import all_points, layer_path, load
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import run_child
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import StrPath, qemu_compare, qemu_img_check

_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup, manifest, merge, recover
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import testhooks
real_save = manifest.save
def save(store, data):
    testhooks.io_event()
    real_save(store, data)
    testhooks.io_event()
for module in (backup, merge, recover):
    module.save = save
kwargs = json.loads(sys.argv[3])
if sys.argv[2] == "backup":
    result = backup.run_backup(backup.Request(**kwargs))
else:
    result = [step._asdict() for step in backup.retain(**kwargs)]
print(json.dumps({"events": testhooks.io_event_count(), "result": result}, default=str))
"""


def run_store_op(op: str, kwargs: dict[str, t.Any], crash_at: int | None = None) -> subprocess.CompletedProcess:
    """op 'backup' (kwargs of backup.Request) or 'retain' (kwargs of backup.retain) in a child Python."""
    return run_child(_RUNNER, [op, json.dumps(kwargs)], crash_at=crash_at)


def store_op(op: str, kwargs: dict[str, t.Any]) -> tuple[t.Any, int]:
    """(result, events) of an uninterrupted run in a child."""
    proc = run_store_op(op, kwargs)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    return out['result'], out['events']


def sealed_layers(store: StrPath) -> dict[int, str]:
    """seq -> layer path of every sealed point (empty for a store without a manifest); not the full's own point
    while a merge into it is under way: that point is retiring, and its view is already gone. Once the merged
    increment's file is deleted (and before the manifest says so), the full alone holds its point."""
    manifest = load(str(store))
    if manifest is None:
        return {}
    merging = manifest['merging'] or {}
    out = {}
    for chain, point in all_points(manifest):
        if point['seq'] == merging.get('full'):
            full_path = layer_path(str(store), chain, point)
            continue
        out[point['seq']] = layer_path(str(store), chain, point)
    if merging and not os.path.exists(out[merging['increment']]):
        out[merging['increment']] = full_path
    return out


def assert_store_sound(store: StrPath, views: dict[int, StrPath], scratch: StrPath, engine_restore: bool = True,
                       only_sealed: bool = True, leaks_ok: bool = False) -> int:
    """Every sealed point reads as views[seq] (qemu-img and, with engine_restore, the engine's restore) and every
    layer is clean; with only_sealed (not right after a crash), nothing but sealed layers in the chain
    directories; with leaks_ok (right after a crash in a merge), leaked clusters in a layer are allowed. Returns the
    number of points checked."""
    layers = sealed_layers(store)
    for seq, layer in layers.items():
        check = qemu_img_check(layer)
        assert check.clean or (leaks_ok and not check.report.get('corruptions')), (seq, layer, check)
        assert qemu_compare(layer, views[seq]), ('qemu-img reads point %d differently' % seq, layer)
        differ = api.differing_ranges(layer, str(views[seq]), force_share=True)
        assert not differ, ('the engine reads point %d differently' % seq, layer, differ[:3])
        if engine_restore:
            dest = Path(scratch) / ('restored-%d.qcow2' % seq)
            restore.restore(str(store), str(dest), seq)
            assert qemu_img_check(dest).clean
            assert qemu_compare(dest, views[seq]), ('the engine restores point %d differently' % seq)
            os.unlink(dest)
    if only_sealed:
        listed = {os.path.abspath(p) for p in layers.values()}
        if load(str(store)).get('hash_block'):  # format 2: each sealed layer has its side file of block digests
            listed |= {side_path(p) for p in listed}
        found = {os.path.abspath(name) for entry in Path(store).iterdir() if entry.is_dir() for name in entry.iterdir()}
        assert found == listed, ('files in the store that no sealed point lists, or side files missing',
                                 sorted(found - listed), sorted(listed - found))
    return len(layers)


def keep_view(source: StrPath, directory: StrPath, name: str) -> Path:
    """A copy of the source as it is now (sparse), to compare a restored point with later."""
    dest = Path(directory) / name
    subprocess.run(['cp', '--sparse=always', str(source), str(dest)], check=True)
    return dest


def store_files(store: StrPath) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in Path(store).rglob('*') if p.is_file())
