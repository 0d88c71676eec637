"""Memory: operations on a 1 TiB image holding ~1 GiB of scattered data stay within tens of MiB of RSS.

Each operation runs in a fresh child process that reports ru_maxrss (tests/helpers/engine_worker.py).
"""

from __future__ import annotations

import json

from ansible_collections.backingchain.qcow2.tests.helpers.engine_worker import run_worker
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    qemu_img_check, qemu_img_create, qemu_img_info, qemu_io_script)

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
CHUNKS = 1024  # 1 MiB each, one per GiB of the virtual disk, at varying offsets inside it
RSS_LIMIT_MIB = 64  # an interpreter with the engine imported is ~20 MiB


def build(path):
    """1 TiB virtual, 1 GiB of data in 1024 places: qemu-io writes it (sparse, a few seconds)."""
    qemu_img_create(path, TiB)
    qemu_io_script(path, ['write -P %d %d 1M' % (i % 250 + 1, i * GiB + (i * 7919 % 1000) * 65536)
                          for i in range(CHUNKS)])
    return path


def measure(record_property, path, op, **extra):
    proc = run_worker(dict(task='measure', path=str(path), op=op, **extra), fresh_rss=True)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.splitlines()[-1])
    record_property('interop_figures', ('memory', {'op': op, 'rss_before_mib': round(figures['rss_before_mib'], 1),
                                                   'rss_peak_mib': round(figures['rss_peak_mib'], 1),
                                                   'seconds': round(figures['seconds'], 1)}))
    return figures


def test_operations_on_a_1tib_image_stay_small(tmp_image_dir, record_property):
    img = build(tmp_image_dir / 'big.qcow2')

    extents = measure(record_property, img, 'extents')
    assert extents['result']['data_bytes'] == CHUNKS * MiB
    read = measure(record_property, img, 'read-data')
    assert read['result']['bytes_read'] == CHUNKS * MiB
    writes = measure(record_property, img, 'scattered-writes', count=2000)
    check = measure(record_property, img, 'check')
    assert check['result']['exit_code'] == 0
    snapshot = measure(record_property, img, 'snapshot', name='after-writes')
    assert snapshot['result']['name'] == 'after-writes'

    for figures in (extents, read, writes, check, snapshot):
        assert figures['rss_peak_mib'] < RSS_LIMIT_MIB, figures
    assert qemu_img_check(img).clean
    assert [s['name'] for s in qemu_img_info(img)['snapshots']] == ['after-writes']
