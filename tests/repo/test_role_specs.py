"""Each role's argument specification matches its defaults, and its tasks use only documented public variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent.parent
ROLES = sorted(p.name for p in (REPO / 'roles').iterdir() if (p / 'meta' / 'argument_specs.yml').is_file())
# facts the roles set for their callers (documented in the READMEs)
FACTS = {
    'golden_image': {'golden_image_base', 'golden_image_report', 'golden_image_reports'},
    'chain_flatten': {'chain_flatten_host_report', 'chain_flatten_report'},
}


def load(role, *parts):
    return yaml.safe_load((REPO / 'roles' / role).joinpath(*parts).read_text(encoding='utf-8'))


def test_the_roles_are_there():
    assert ROLES == ['chain_flatten', 'golden_image']


@pytest.mark.parametrize('role', ROLES)
def test_every_default_is_documented_with_the_same_value(role):
    defaults = load(role, 'defaults', 'main.yml')
    options = load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    assert set(defaults) <= set(options)
    for name, spec in options.items():
        assert name.startswith(role + '_'), name
        if spec.get('required'):
            assert name not in defaults, '%s is required and must not have a default' % name
            assert 'default' not in spec
        else:
            assert name in defaults, '%s has no default in defaults/main.yml' % name
            if 'default' in spec:
                assert spec['default'] == defaults[name], name


@pytest.mark.parametrize('role', ROLES)
def test_every_option_has_a_description_and_type(role):
    spec = load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']
    assert spec['short_description'] and spec['description']
    for name, option in spec['options'].items():
        assert option.get('description'), name
        assert option.get('type'), name
        if option['type'] == 'list':
            assert option.get('elements'), name


@pytest.mark.parametrize('role', ROLES)
def test_tasks_and_templates_use_only_documented_public_variables(role):
    options = set(load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']['options'])
    # public names have one underscore after the prefix; internal ones (two) are free
    public = re.compile(r'\b%s_[a-z][a-z0-9_]*' % re.escape(role))
    used = set()
    for path in (REPO / 'roles' / role).rglob('*'):
        if path.suffix in ('.yml', '.j2') and path.parent.name in ('tasks', 'templates', 'vars'):
            used |= set(public.findall(path.read_text(encoding='utf-8')))
    assert used - options - FACTS[role] == set()
    assert FACTS[role] <= used
