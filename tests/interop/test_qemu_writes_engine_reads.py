"""qemu writes, the engine reads: every byte equals 'qemu-img convert -O raw' of the same image.

The matrix: cluster size x compat x refcount width x extended L2 (valid combinations only) x scenario.
"""

from __future__ import annotations

import random

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import image_info
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import open_chain
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import (
    qemu_img, qemu_img_create, qemu_img_info, qemu_io, qemu_io_holding, qemu_io_send, qemu_supports, raw_of)

CLUSTER_SIZES = [512, 4096, 65536, 2 << 20]
REFCOUNT_BITS = [1, 2, 4, 8, 16, 32, 64]
SCENARIOS = ['zero', 'prealloc-zero', 'compressed-zlib', 'compressed-zstd', 'snapshot', 'snapshot-revert',
             'backing-raw', 'backing-qcow2', 'bitmaps', 'lazy-refcounts', 'lazy-refcounts-crashed']


def geometries():
    for cs in CLUSTER_SIZES:
        for compat in ('0.10', '1.1'):
            for bits in REFCOUNT_BITS:
                for ext in (False, True):
                    if compat == '0.10' and (bits != 16 or ext):
                        continue  # v2: 16-bit refcounts, no subclusters
                    if ext and cs < 16384:
                        continue  # extended L2 needs 16 KiB clusters
                    yield dict(cluster_size=cs, compat=compat, refcount_bits=bits, extended_l2='on' if ext else 'off')


def valid(geo, scenario):
    v3 = geo['compat'] == '1.1'
    if scenario in ('compressed-zstd', 'bitmaps', 'lazy-refcounts', 'lazy-refcounts-crashed') and not v3:
        return False
    if scenario == 'compressed-zstd' and not qemu_supports(compression_type='zstd'):
        return False
    if scenario.startswith('snapshot') and geo['refcount_bits'] == 1:
        return False  # a second reference overflows a 1-bit refcount: qemu refuses the snapshot
    return True


def case_id(geo, scenario):
    extl2 = '-extl2' if geo['extended_l2'] == 'on' else ''
    return '%s-%s-rc%d%s-%s' % (geo['cluster_size'], geo['compat'], geo['refcount_bits'], extl2, scenario)


CASES = [(geo, s) for geo in geometries() for s in SCENARIOS if valid(geo, s)]


def image_size(cs):
    return max(6 * cs, 1 << 20) + 1536  # the last cluster is partial


def guest_writes(cs, size, seed):
    """Data (aligned, unaligned, at the tail) then zero writes, plain and with unmap."""
    b = seed & 0x7f
    return [
        'write -P %d 0 %d' % (b + 1, cs),
        'write -P %d %d %d' % (b + 2, cs + 100, 2 * cs),
        'write -P %d %d 700' % (b + 3, size - 700),
        'write -P %d %d %d' % (b + 4, 5 * cs - 4096 if cs > 4096 else 5 * cs, 8192),
        'write -z %d %d' % (cs + 200, cs),
        'write -z %d %d' % (3 * cs, cs),
        'write -z -u %d %d' % (2 * cs, cs // 2),
        'write -z %d %d' % (size - 3000, 1000),
    ]


def _opts(geo, **extra):
    opts = dict(geo)
    opts.update(extra)
    return opts


def _source_raw(path, size, cs):
    """Compressible text, zeros and one incompressible cluster: convert -c stores some clusters plain."""
    rng = random.Random(size)
    data = bytearray((b'qcow2 interop ' * (size // 14 + 1))[:size])
    data[2 * cs:3 * cs] = bytes(cs)
    data[4 * cs:5 * cs] = rng.getrandbits(8 * cs).to_bytes(cs, 'little')
    path.write_bytes(bytes(data))
    return path


def build(d, geo, scenario):
    """Create the scenario's image(s) with qemu; return the top image."""
    cs = geo['cluster_size']
    size = image_size(cs)
    top = d / 'top.qcow2'
    if scenario == 'zero':
        qemu_img_create(top, size, options=_opts(geo))
        qemu_io(top, *guest_writes(cs, size, 1))
    elif scenario == 'prealloc-zero':
        qemu_img_create(top, size, options=_opts(geo, preallocation='metadata'))
        qemu_io(top, *guest_writes(cs, size, 2))
    elif scenario.startswith('compressed'):
        src = _source_raw(d / 'src.raw', size, cs)
        ctype = scenario.split('-')[1]
        extra = {'compression_type': ctype} if geo['compat'] == '1.1' else {}
        qemu_img('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o',
                 ','.join('%s=%s' % kv for kv in _opts(geo, **extra).items()), src, top)
        qemu_io(top, 'write -P 7 %d 1000' % (cs + 300), 'write -z %d %d' % (3 * cs - 512, 1024))
    elif scenario.startswith('snapshot'):
        qemu_img_create(top, size, options=_opts(geo))
        qemu_io(top, *guest_writes(cs, size, 3))
        qemu_img('snapshot', '-c', 's1', top)
        qemu_io(top, 'write -P 9 %d %d' % (cs // 2, cs), 'write -z %d %d' % (4 * cs, cs), 'write -P 10 %d 512' % (size - 512))
        if geo['refcount_bits'] >= 4:
            qemu_img('snapshot', '-c', 's2', top)
            qemu_io(top, 'write -P 11 0 %d' % (3 * cs))
        if scenario == 'snapshot-revert':
            qemu_img('snapshot', '-a', 's1', top)
            qemu_io(top, 'write -P 12 %d 100' % (2 * cs + 7))
    elif scenario.startswith('backing'):
        base_size = size - 3 * cs if size - 3 * cs >= cs else size // 2 // 512 * 512  # shorter than the overlay
        if scenario == 'backing-raw':
            base, fmt = d / 'base.raw', 'raw'
            base.write_bytes((bytes(range(1, 256)) * (base_size // 255 + 1))[:base_size])
        else:
            base, fmt = d / 'base.qcow2', 'qcow2'
            qemu_img_create(base, base_size)
            qemu_io(base, 'write -P 21 0 %d' % base_size, 'write -z %d %d' % (cs, cs))
        mid = d / 'mid.qcow2'
        qemu_img_create(mid, size - cs if size - cs > base_size else size, backing=base.name, backing_fmt=fmt,
                        options=_opts(geo), cwd=d)
        qemu_io(mid, 'write -P 22 %d %d' % (cs + 512, cs), 'write -z %d %d' % (2 * cs, cs + 512))
        qemu_img_create(top, size, backing=mid.name, options=_opts(geo), cwd=d)
        qemu_io(top, 'write -P 23 %d 3000' % abs(cs - 1000), 'write -z %d %d' % (4 * cs, cs), 'write -P 24 %d 512' % (size - 512))
    elif scenario == 'bitmaps':
        qemu_img_create(top, size, options=_opts(geo))
        qemu_img('bitmap', '--add', top, 'b0')
        qemu_img('bitmap', '--add', '--granularity', '4096', top, 'b1')
        qemu_img('bitmap', '--add', '--disable', top, 'off')
        qemu_io(top, *guest_writes(cs, size, 4))
    elif scenario == 'lazy-refcounts':
        qemu_img_create(top, size, options=_opts(geo, lazy_refcounts='on'))
        qemu_io(top, *guest_writes(cs, size, 5))
    elif scenario == 'lazy-refcounts-crashed':
        qemu_img_create(top, size, options=_opts(geo, lazy_refcounts='on'))
        with qemu_io_holding(top, options=['-t', 'writethrough']) as session:
            for cmd in guest_writes(cs, size, 6):  # each flushed: on disk, with the refcounts left stale
                qemu_io_send(session, cmd, 'bytes at offset')
            session.kill()  # leaves the dirty bit set and refcounts stale, as a crashed VM does
            session.wait()
        assert qemu_img_info(top)['dirty-flag']
    return top


@pytest.mark.parametrize('geo, scenario', CASES, ids=[case_id(g, s) for g, s in CASES])
def test_engine_reads_what_qemu_wrote(tmp_image_dir, geo, scenario):
    top = build(tmp_image_dir, geo, scenario)
    expected = raw_of(top, dest_dir=tmp_image_dir).read_bytes()
    cs = geo['cluster_size']
    rng = random.Random(case_id(geo, scenario))

    with open_chain(str(top)) as chain:
        img = chain.top
        assert img.size == len(expected)
        assert img.read(0, img.size) == expected
        for _read in range(60):
            offset = rng.randrange(img.size)
            length = rng.randint(1, min(img.size - offset, 3 * cs + 1000))
            assert img.read(offset, length) == expected[offset:offset + length], (offset, length)
        covered = [(e.offset, e.end) for e in img.extents(0, img.size)]
        assert covered[0][0] == 0 and covered[-1][1] == img.size
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))

    if scenario == 'bitmaps':
        ours = image_info(str(top), backing_chain=False)[0]['format-specific']['data']['bitmaps']
        assert ours == qemu_img_info(top)['format-specific']['data']['bitmaps']


def test_matrix_size(record_property):
    """The matrix is as large as the brief says; the count is printed in the summary."""
    per_scenario = {s: sum(1 for _geo, sc in CASES if sc == s) for s in SCENARIOS}
    figures = dict(cases=len(CASES), geometries=len(list(geometries())))
    figures.update((s.replace('-', '_'), n) for s, n in per_scenario.items())
    record_property('interop_figures', ('qemu-writes-engine-reads matrix', figures))
    assert len(list(geometries())) == 46
    assert per_scenario['zero'] == 46 and per_scenario['snapshot'] == 40
