"""scripts/lib/ansiballz_pyc_cache.py: code imported from an AnsiballZ payload zip comes from the cache, the same
code zipimport would compile, and any trouble leaves the import to zipimport."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
import zipimport
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK_FILE = REPO / 'scripts' / 'lib' / 'ansiballz_pyc_cache.py'

SUB = b'''
def nested():
    return helper() * 2

def helper():
    return %d
'''


def _load_hook():
    spec = importlib.util.spec_from_file_location('ansiballz_pyc_cache_under_test', HOOK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hook(tmp_path, monkeypatch):
    """The hook module, its cache in tmp_path/cache, and a count of the compile() calls it makes."""
    module = _load_hook()
    monkeypatch.setenv(module.ENV, str(tmp_path / 'cache'))
    module.compiled = []

    def counting_compile(source, path, *args, **kwargs):
        module.compiled.append(path)
        return compile(source, path, *args, **kwargs)

    monkeypatch.setattr(module, 'compile', counting_compile, raising=False)
    return module


def _payload(directory: Path, value: int = 21, name: str = 'ansible_demo_payload.zip') -> str:
    """A zip laid out like AnsiballZ's: a package with a submodule, CRLF line endings in one file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('pkg/__init__.py', b'VALUE = "package"\r\n')
        z.writestr('pkg/sub.py', SUB % value)
    return str(path)


def _entries(tmp_path: Path) -> list[Path]:
    cache = tmp_path / 'cache'
    return sorted(cache.iterdir()) if cache.exists() else []


def _run(hook, archive: str, fullname: str):
    """Import fullname from archive the way the import system does: find_spec, then exec_module."""
    inner = os.path.dirname(fullname.replace('.', os.sep))
    importer = hook.CachingZipImporter(os.path.join(archive, inner) if inner else archive)
    spec = importer.find_spec(fullname)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_code_is_compiled_once_and_then_comes_from_the_cache(hook, tmp_path):
    first = _run(hook, _payload(tmp_path / 'one'), 'pkg.sub')
    assert first.nested() == 42
    assert hook.compiled == [first.__file__]  # find_spec and exec_module share one compile
    assert len(_entries(tmp_path)) == 1

    hook.compiled.clear()
    second_zip = _payload(tmp_path / 'two')
    second = _run(hook, second_zip, 'pkg.sub')
    assert hook.compiled == []
    assert second.nested() == 42
    # The path in the new zip, everywhere zipimport would put it.
    assert second.__file__ == os.path.join(second_zip, 'pkg', 'sub.py')
    assert second.__spec__.origin == second.__file__
    assert second.nested.__code__.co_filename == second.__file__
    assert second.helper.__code__.co_filename == second.__file__


def test_the_same_filenames_and_code_as_zipimport(hook, tmp_path):
    archive = _payload(tmp_path / 'one')
    for inner, fullname in (('', 'pkg'), ('pkg', 'pkg.sub')):
        path = os.path.join(archive, inner) if inner else archive
        plain = zipimport.zipimporter(path)
        for attempt in range(2):  # a miss, then a hit
            cached = hook.CachingZipImporter(path)
            assert cached.get_filename(fullname) == plain.get_filename(fullname)
            got, want = cached.get_code(fullname), plain.get_code(fullname)
            assert (got.co_filename, got.co_code, got.co_consts, got.co_names) == \
                (want.co_filename, want.co_code, want.co_consts, want.co_names), attempt


def test_a_changed_source_is_compiled_again(hook, tmp_path):
    assert _run(hook, _payload(tmp_path / 'one', value=21), 'pkg.sub').nested() == 42
    hook.compiled.clear()
    changed = _run(hook, _payload(tmp_path / 'two', value=5), 'pkg.sub')
    assert hook.compiled == [changed.__file__]
    assert changed.nested() == 10
    assert len(_entries(tmp_path)) == 2


@pytest.mark.parametrize('damage', [b'', b'garbage', 'magic and garbage'])
def test_a_damaged_entry_is_compiled_again_and_replaced(hook, tmp_path, damage):
    _run(hook, _payload(tmp_path / 'one'), 'pkg.sub')
    [entry] = _entries(tmp_path)
    if damage == 'magic and garbage':
        damage = importlib.util.MAGIC_NUMBER + b'\xff\x00garbage'
    entry.write_bytes(damage)

    hook.compiled.clear()
    assert _run(hook, _payload(tmp_path / 'two'), 'pkg.sub').nested() == 42
    assert len(hook.compiled) == 1
    assert entry.read_bytes() != damage

    hook.compiled.clear()
    assert _run(hook, _payload(tmp_path / 'three'), 'pkg.sub').nested() == 42
    assert hook.compiled == []


def test_a_cache_that_cannot_be_written_leaves_the_import_working(hook, tmp_path, monkeypatch):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a directory')
    monkeypatch.setenv(hook.ENV, str(blocker / 'cache'))
    assert _run(hook, _payload(tmp_path / 'one'), 'pkg.sub').nested() == 42
    assert _run(hook, _payload(tmp_path / 'two'), 'pkg.sub').nested() == 42
    assert len(hook.compiled) == 2


def test_an_error_in_the_hook_falls_back_to_zipimport(hook, tmp_path, monkeypatch):
    def broken(source, path):
        raise RuntimeError('broken cache')

    monkeypatch.setattr(hook, 'code_for', broken)
    module = _run(hook, _payload(tmp_path / 'one'), 'pkg.sub')
    assert module.nested() == 42
    assert hook.compiled == []
    assert _entries(tmp_path) == []


def test_a_syntax_error_is_zipimport_s_own(hook, tmp_path):
    archive = tmp_path / 'ansible_bad_payload.zip'
    with zipfile.ZipFile(archive, 'w') as z:
        z.writestr('bad.py', b'def broken(:\n')
    with pytest.raises(SyntaxError) as cached:
        hook.CachingZipImporter(str(archive)).get_code('bad')
    with pytest.raises(SyntaxError) as plain:
        zipimport.zipimporter(str(archive)).get_code('bad')
    assert (cached.value.filename, cached.value.lineno) == (plain.value.filename, plain.value.lineno)
    assert _entries(tmp_path) == []


def test_only_ansiballz_payload_zips_are_served(hook, tmp_path):
    archive = _payload(tmp_path / 'one')
    assert isinstance(hook._payload_hook(archive), hook.CachingZipImporter)
    assert isinstance(hook._payload_hook(os.path.join(archive, 'pkg')), hook.CachingZipImporter)
    other = _payload(tmp_path / 'one', name='library.zip')
    for path in (other, str(tmp_path), archive + '.d'):
        with pytest.raises(ImportError):
            hook._payload_hook(path)


CHILD = r'''
import importlib.util, json, sys, zipimport
spec = importlib.util.spec_from_file_location('ansiballz_pyc_cache', sys.argv[1])
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)
hook.install()
sys.path.insert(0, sys.argv[2])
import pkg.sub
print(json.dumps({
    'hooked': type(sys.path_importer_cache[sys.argv[2]]).__name__,
    'file': pkg.sub.__file__, 'origin': pkg.sub.__spec__.origin, 'package_file': pkg.__file__,
    'zipimporter': isinstance(pkg.sub.__loader__, zipimport.zipimporter), 'co_filename': pkg.sub.nested.__code__.co_filename,
    'result': pkg.sub.nested(), 'value': pkg.VALUE,
}))
'''


def test_an_interpreter_with_the_hook_installed_imports_from_the_payload_as_without_it(tmp_path):
    """End to end, as the .pth installs it (python -S: not the copy installed in this venv)."""
    def child(directory, off):
        archive = _payload(tmp_path / directory)
        env = dict(os.environ, BCQ_ZIP_PYC_CACHE='0' if off else str(tmp_path / 'cache'))
        out = subprocess.run([sys.executable, '-S', '-c', CHILD, str(HOOK_FILE), archive], env=env,
                             capture_output=True, text=True, check=True).stdout
        seen = json.loads(out)
        for key in ('file', 'origin', 'package_file', 'co_filename'):
            seen[key] = os.path.relpath(seen[key], archive)
        return seen

    plain = child('plain', off=True)
    assert plain.pop('hooked') == 'zipimporter'
    assert _entries(tmp_path) == []
    for directory in ('miss', 'hit'):
        hooked = child(directory, off=False)
        assert hooked.pop('hooked') == 'CachingZipImporter'
        assert hooked == plain
    assert len(_entries(tmp_path)) == 2  # pkg/__init__.py and pkg/sub.py
