"""Check mode: the engine's plans (plan_commit, plan_rebase, plan_convert) predict 'changed' exactly as the real run
reports it, and write nothing."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.tests.helpers.chains import (
    STANDARD_CHAINS,
    build_chain,
    file_digests,
    file_states,
    same_view,
    view_of,
)
from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img_create, qemu_io

# name: (api function, keyword arguments; a leading '@' marks a file of the chain's directory)
OPERATIONS = {
    'commit': ('commit', {'path': '@top.qcow2'}),
    'commit into a deeper base': ('commit', {'path': '@top.qcow2', 'base': '@base.qcow2'}),
    'commit an intermediate layer': ('commit', {'path': '@top.qcow2', 'top': '@mid.qcow2'}),
    'commit with removal': ('commit', {'path': '@top.qcow2', 'base': '@base.qcow2', 'remove_committed': True}),
    'safe rebase within the chain': ('rebase', {'path': '@top.qcow2', 'backing_file': 'base.qcow2',
                                                'backing_format': 'qcow2'}),
    'safe rebase onto an unrelated image': ('rebase', {'path': '@top.qcow2', 'backing_file': 'other.qcow2',
                                                       'backing_format': 'qcow2'}),
    'flatten in place': ('rebase', {'path': '@top.qcow2', 'backing_file': ''}),
    'unsafe rebase': ('rebase', {'path': '@top.qcow2', 'backing_file': 'other.qcow2', 'backing_format': 'qcow2',
                                 'unsafe': True}),
    'rebase to another name of the same file': ('rebase', {'path': '@top.qcow2', 'backing_file': '@mid.qcow2',
                                                           'backing_format': 'qcow2'}),
    'rebase to the same name': ('rebase', {'path': '@top.qcow2', 'backing_file': 'mid.qcow2',
                                           'backing_format': 'qcow2'}),
    'convert': ('convert', {'source': '@top.qcow2', 'dest': '@flat.qcow2'}),
    'convert compressed above a backing file': ('convert', {'source': '@top.qcow2', 'dest': '@flat.qcow2',
                                                            'compress': True, 'backing_file': 'base.qcow2',
                                                            'backing_format': 'qcow2'}),
}


def _kwargs(kwargs, directory):
    return {k: str(directory / v[1:]) if isinstance(v, str) and v.startswith('@') else v for k, v in kwargs.items()}


def _snapshot(directory):
    return file_states(directory), file_digests(directory)


def _images(tmp_path, name):
    """A directory with the standard chain ``name`` and other.qcow2, an unrelated image with data of its own."""
    images = tmp_path / 'images'
    images.mkdir()
    build_chain(images, STANDARD_CHAINS[name]())
    other = qemu_img_create(images / 'other.qcow2', 7 * 1024 * 1024)
    qemu_io(other, 'write -P 0x42 1M 5M')
    return images


@pytest.mark.parametrize('name', ['c4k-v2', 'short-mid'])
@pytest.mark.parametrize('operation', list(OPERATIONS))
def test_dry_run_predicts_and_writes_nothing(tmp_path, name, operation):
    op, raw_kwargs = OPERATIONS[operation]
    images = _images(tmp_path, name)
    before = view_of(images / 'top.qcow2', tmp_path)
    kwargs = _kwargs(raw_kwargs, images)
    fn, plan = getattr(api, op), getattr(api, 'plan_' + op)

    for round_ in ('first', 'second'):
        untouched = _snapshot(images)
        predicted = plan(**kwargs)._asdict()
        assert _snapshot(images) == untouched, round_
        real = fn(**kwargs)._asdict()
        assert real['changed'] == predicted['changed'], round_
        for key in ('committed', 'removed', 'header_only', 'old_backing', 'new_backing'):
            if key in predicted:
                assert real[key] == predicted[key], (round_, key)
        if round_ == 'first' and not kwargs.get('unsafe'):
            assert same_view(images / ('flat.qcow2' if op == 'convert' else 'top.qcow2'), before)
    if op != 'convert':
        assert real['changed'] is False  # the second round: nothing left to do, and check mode says so
    assert not [n for n in os.listdir(images) if n.endswith('.tmp')]


@pytest.mark.parametrize('name', ['c4k-v2', 'short-mid'])
@pytest.mark.parametrize('operation', [name for name, (op, _kwargs) in OPERATIONS.items() if op != 'convert'])
def test_an_unmeasured_plan_decides_as_the_measured_one(tmp_path, name, operation):
    """A real run's plan (measure=False) skips walking the data, which the commit or rebase does under its locks: it
    must decide and describe everything else exactly as the measured plan of check mode, and the operation it is
    handed to must do what the measured plan predicted."""
    op, raw_kwargs = OPERATIONS[operation]
    images = _images(tmp_path, name)
    before = view_of(images / 'top.qcow2', tmp_path)
    kwargs = _kwargs(raw_kwargs, images)
    fn, plan = getattr(api, op), getattr(api, 'plan_' + op)

    for round_ in ('first', 'second'):
        untouched = _snapshot(images)
        measured = plan(**kwargs)
        unmeasured = plan(measure=False, **kwargs)
        assert _snapshot(images) == untouched, round_
        copies = measured.changed and not getattr(measured, 'header_only', False)
        assert unmeasured.bytes_copied == (None if copies else measured.bytes_copied), round_
        assert unmeasured._replace(bytes_copied=None) == measured._replace(bytes_copied=None), round_
        real = fn(plan=unmeasured, **kwargs)._asdict()
        for key in ('changed', 'top', 'base', 'committed', 'removed', 'header_only', 'old_backing', 'new_backing'):
            if key in real:
                assert real[key] == measured._asdict()[key], (round_, key)
        if not kwargs.get('unsafe'):
            assert same_view(images / 'top.qcow2', before), round_
    assert real['changed'] is False
