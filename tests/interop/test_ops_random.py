"""Randomised chains (fixed seeds, so every run is the same): any operation keeps the guest view, qemu-img check is clean.

Each seed draws a 2- to 4-deep chain with random cluster sizes (512 B to
2 MiB), compat levels, extended L2, a raw base now and then, internal
snapshots, and data and zero writes at sector-aligned offsets, then one
operation. A run like this found the partial-zero copy-on-write bug of
safe rebase.
"""

from __future__ import annotations

import random

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    MiB,
    Layer,
    assert_clean,
    build_chain,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import backing_chain, qemu_img_create, qemu_io

KiB = 1024
OPERATIONS = ('commit', 'commit into the deepest base', 'commit an intermediate layer', 'rebase within the chain',
              'rebase onto an unrelated image', 'flatten', 'convert', 'convert -c', 'convert -B', 'grow')


def _layer(rng, name, size, extent, fmt):
    opts = {}
    if fmt == 'qcow2':
        opts['cluster_size'] = rng.choice([512, 4096, 16384, 65536, 2 * MiB])
        opts['compat'] = rng.choice(['1.1', '1.1', '0.10'])
        if opts['compat'] == '1.1' and opts['cluster_size'] >= 16384 and rng.random() < 0.3:
            opts['extended_l2'] = 'on'
    steps = []
    for _unused in range(rng.randint(0, 12)):
        offset = rng.randrange(extent // 512) * 512
        length = min(rng.choice([512, 1024, 3584, 4096, 8192, 40960, 65536, 300 * KiB, MiB]), extent - offset)
        if fmt == 'qcow2' and rng.random() < 0.4:
            steps.append('write -z %d %d' % (offset, length))
        else:
            steps.append('write -P %d %d %d' % (rng.randrange(1, 255), offset, length))
    if fmt == 'qcow2' and rng.random() < 0.15:
        steps.insert(rng.randrange(len(steps) + 1), 'snapshot s%d' % rng.randrange(100))
    return Layer(name, size, fmt, opts, tuple(steps))


def _chain(rng):
    depth = rng.randint(2, 4)
    layers = []
    extent = 0
    for i in range(depth):
        fmt = 'raw' if i == 0 and rng.random() < 0.2 else 'qcow2'
        size = rng.choice([2 * MiB, 3 * MiB + 512, 4 * MiB]) if i == 0 or rng.random() < 0.6 else None
        extent = size or extent  # without a size of its own, a layer is as large as its backing file
        layers.append(_layer(rng, 'l%d.%s' % (i, 'raw' if fmt == 'raw' else 'qcow2'), size, extent, fmt))
    return layers


@pytest.mark.parametrize('seed', range(40))
def test_random_chain_and_operation(tmp_path, seed):
    rng = random.Random(seed)
    layers = _chain(rng)
    operation = OPERATIONS[seed % len(OPERATIONS)]
    if operation == 'commit an intermediate layer' and len(layers) < 3:
        operation = 'commit'
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, layers)
    other = qemu_img_create(images / 'other.qcow2', rng.choice([1, 5]) * MiB,
                            options={'cluster_size': rng.choice([512, 65536])})
    qemu_io(other, 'write -P 77 0 512k', 'write -P 78 900k 100k')
    top = str(images / layers[-1].name)
    base = layers[0]
    before = view_of(top, tmp_path)
    out = top

    if operation == 'commit':
        api.commit(top)
    elif operation == 'commit into the deepest base':
        api.commit(top, base=str(images / base.name))
    elif operation == 'commit an intermediate layer':
        api.commit(top, top=str(images / layers[-2].name),
                   base=str(images / base.name) if len(layers) == 4 and rng.random() < 0.5 else None)
    elif operation == 'rebase within the chain':
        api.rebase(top, base.name, base.fmt)
    elif operation == 'rebase onto an unrelated image':
        api.rebase(top, 'other.qcow2', 'qcow2')
    elif operation == 'flatten':
        api.rebase(top, '')
    elif operation == 'grow':
        api.grow_image(top, 8 * MiB)
    else:
        out = str(images / 'out.qcow2')
        keep = {'backing_file': base.name, 'backing_format': base.fmt} if operation == 'convert -B' else {}
        api.convert(top, out, compress=operation != 'convert' and rng.random() < 0.7, **keep)

    assert same_view(out, before), (seed, operation, layers)
    assert_clean([p for p in images.iterdir() if p.suffix == '.qcow2'])
    assert backing_chain(out)  # qemu opens the whole chain
