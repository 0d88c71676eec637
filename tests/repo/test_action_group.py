"""module_defaults for group/backingchain.qcow2.qcow2 reach every module, and every module accepts them."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
MODULES = sorted(p.stem for p in (REPO / 'plugins' / 'modules').glob('*.py') if p.stem != '__init__')


def test_the_group_lists_every_module():
    runtime = yaml.safe_load((REPO / 'meta' / 'runtime.yml').read_text(encoding='utf-8'))
    assert sorted(runtime['action_groups']['qcow2']) == MODULES


def test_every_module_documents_the_group_and_the_shared_options():
    for name in MODULES:
        module = importlib.import_module(f'ansible_collections.backingchain.qcow2.plugins.modules.{name}')
        fragments = yaml.safe_load(module.DOCUMENTATION)['extends_documentation_fragment']
        assert 'backingchain.qcow2._attributes.ACTIONGROUP_QCOW2' in fragments, name
        assert 'backingchain.qcow2._engine' in fragments, name
