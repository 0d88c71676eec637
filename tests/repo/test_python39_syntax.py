"""Plugins run on managed nodes with Python >= 3.9 (tests/config.yml): no newer syntax.

The controller here runs 3.11 and ansible-test only compiles with the Pythons
it finds, so parse every plugin file with the 3.9 grammar. This catches
syntax (match statements, except*, ...), not newer library calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
TARGET = (3, 9)


def python39_syntax_errors(paths):
    """Return 'path:line: message' for each file that Python 3.9 cannot parse."""
    errors = []
    for path in paths:
        try:
            ast.parse(path.read_text(encoding='utf-8'), filename=str(path), feature_version=TARGET)
        except SyntaxError as exc:
            errors.append(f'{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{exc.lineno}: {exc.msg}')
    return errors


def test_plugins_parse_with_python39_grammar():
    plugin_files = sorted((REPO / 'plugins').rglob('*.py'))
    assert python39_syntax_errors(plugin_files) == []


@pytest.mark.parametrize('source', [
    'match x:\n    case 1:\n        pass\n',
    'try:\n    pass\nexcept* ValueError:\n    pass\n',
])
def test_newer_syntax_is_reported(tmp_path, source):
    path = tmp_path / 'newer.py'
    path.write_text(source, encoding='utf-8')
    assert len(python39_syntax_errors([path])) == 1
