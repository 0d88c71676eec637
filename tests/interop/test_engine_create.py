"""Images the engine creates, in every option combination qemu-img create accepts: qemu-img check finds
them clean, and qemu-img info --output=json says exactly what the engine's image_info says."""

from __future__ import annotations

import itertools

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import create_image, image_info
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.create import CreateOptions
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    QemuError, qemu_img, qemu_img_check, qemu_img_create, qemu_img_info, qemu_io, raw_of)

MiB = 1 << 20
SIZE = 5 * MiB + 512  # the last cluster is partial for every cluster size

AXES = dict(
    cluster_size=[512, 4096, 65536, 2 << 20],
    compat=['0.10', '1.1'],
    refcount_bits=[1, 2, 16, 64],
    lazy_refcounts=[False, True],
    extended_l2=[False, True],
    preallocation=['off', 'metadata', 'falloc', 'full'],
    backing=[False, True],
    compression_type=['zlib', 'zstd'],
)


def combinations():
    names = sorted(AXES)
    for values in itertools.product(*(AXES[n] for n in names)):
        opts = dict(zip(names, values))
        try:
            CreateOptions(size=SIZE, **_engine_opts(opts)).validate()
        except InvalidArgumentError:
            continue
        yield opts


def _engine_opts(opts):
    out = dict(opts)
    backing = out.pop('backing')
    out['backing_file'] = 'base.qcow2' if backing else None
    out['backing_format'] = 'qcow2' if backing else None
    return out


def case_id(opts):
    return '-'.join('%s=%s' % (k[:6], v) for k, v in sorted(opts.items()))


CASES = list(combinations())


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp('backing')
    path = qemu_img_create(d / 'base.qcow2', 3 * MiB)
    qemu_io(path, 'write -P 0x42 0 3M')
    return path


@pytest.mark.parametrize('opts', CASES, ids=[case_id(o) for o in CASES])
def test_engine_created_image_is_what_qemu_would_report(tmp_image_dir, base, opts):
    if opts['backing']:
        (tmp_image_dir / 'base.qcow2').symlink_to(base)
    path = tmp_image_dir / 'engine.qcow2'
    create_image(str(path), CreateOptions(size=None if opts['backing'] else SIZE, **_engine_opts(opts)))

    result = qemu_img_check(path)
    assert result.clean, result.report
    theirs = qemu_img_info(path)
    ours = image_info(str(path), backing_chain=False)[0]
    theirs.pop('actual-size')
    ours.pop('actual-size')
    assert ours == theirs
    content = raw_of(path, dest_dir=tmp_image_dir).read_bytes()  # the backing file's content, else zeros
    assert content == (b'\x42' * (3 * MiB) if opts['backing'] else bytes(SIZE))


@pytest.mark.parametrize('cluster_size', AXES['cluster_size'])
def test_qemu_accepts_exactly_the_combinations_the_engine_accepts(tmp_image_dir, cluster_size):
    """Without a backing file or preallocation, qemu-img create and CreateOptions agree on what is valid."""
    accepted = 0
    names = sorted(AXES)
    for values in itertools.product(*(AXES[n] for n in names)):
        opts = dict(zip(names, values))
        if opts['backing'] or opts['preallocation'] != 'off' or opts['cluster_size'] != cluster_size:
            continue
        try:
            CreateOptions(size=SIZE, **_engine_opts(opts)).validate()
            engine_ok = True
        except InvalidArgumentError:
            engine_ok = False
        qopts = {k: ('on' if v else 'off') if isinstance(v, bool) else v for k, v in opts.items() if k != 'backing'}
        try:
            qemu_img('create', '-q', '-f', 'qcow2', '-o', ','.join('%s=%s' % kv for kv in qopts.items()),
                     tmp_image_dir / 'probe.qcow2', str(SIZE))
            qemu_ok = True
        except QemuError:
            qemu_ok = False
        assert engine_ok == qemu_ok, opts
        accepted += engine_ok
    assert accepted


def test_combination_count_is_recorded(record_property):
    record_property('interop_figures', ('engine-create combinations', {'cases': len(CASES)}))
    assert len(CASES) > 300
