"""An execution environment with this collection: ansible-builder's build context names its dependencies.

There is no container engine here, so the image itself is not built. The test runs `ansible-builder create`
over a minimal execution-environment.yml that installs the built tarball, then runs the introspection step
the generated Containerfile would run in its builder stage (the context's own scripts/introspect.py) over
the installed collection, and reads bindep.txt the way the image's package install does.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bindep.depends import Depends

from .conftest import FQCN, REPO, venv_tool


@pytest.fixture(scope='module')
def build_context(tmp_path_factory, collection_tarball) -> Path:
    work = tmp_path_factory.mktemp('ee')
    definition = {
        'version': 3,
        'dependencies': {
            'ansible_core': {'package_pip': 'ansible-core>=2.17'},
            'ansible_runner': {'package_pip': 'ansible-runner'},
            'galaxy': {'collections': [{'name': 'collections/%s' % collection_tarball.name, 'type': 'file'}]},
        },
        'additional_build_files': [{'src': str(collection_tarball), 'dest': 'collections'}],
    }
    (work / 'execution-environment.yml').write_text(yaml.safe_dump(definition))
    subprocess.run([venv_tool('ansible-builder'), 'create', '--file', 'execution-environment.yml', '--context',
                    'context', '--output-filename', 'Containerfile'], cwd=work, check=True, capture_output=True)
    return work / 'context'


def test_context_installs_the_collection_tarball(build_context, collection_tarball):
    assert (build_context / '_build' / 'collections' / collection_tarball.name).read_bytes() == \
        collection_tarball.read_bytes()
    requirements = yaml.safe_load((build_context / '_build' / 'requirements.yml').read_text())
    assert requirements['collections'] == [{'name': 'collections/' + collection_tarball.name, 'type': 'file'}]
    containerfile = (build_context / 'Containerfile').read_text()
    assert 'ansible-galaxy collection install' in containerfile
    assert 'introspect.py introspect' in containerfile


@pytest.fixture(scope='module')
def introspected(build_context, installed_collections, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp('introspect')
    subprocess.run([sys.executable, str(build_context / '_build' / 'scripts' / 'introspect.py'), 'introspect',
                    '--write-pip', str(out / 'requirements.txt'), '--write-bindep', str(out / 'bindep.txt'),
                    str(installed_collections)], check=True, capture_output=True)
    return {name: (out / name).read_text() for name in ('requirements.txt', 'bindep.txt')}


@pytest.mark.parametrize('requirement', ['construct>=2.10.70', 'zstandard>=0.21', 'libvirt-python>=9.0'])
def test_image_gets_the_python_libraries(introspected, requirement):
    lines = introspected['requirements.txt'].splitlines()
    assert '%s  # from collection %s' % (requirement, FQCN) in lines


@pytest.mark.parametrize('package', ['libvirt-libs [platform:rpm]', 'libvirt-devel [platform:rpm compile]',
                                     'qemu-img [platform:rpm test]'])
def test_image_gets_the_system_packages(introspected, package):
    assert '%s  # from collection %s' % (package, FQCN) in introspected['bindep.txt'].splitlines()


@functools.lru_cache(maxsize=None)
def _depends() -> Depends:
    return Depends((REPO / 'bindep.txt').read_text())  # seconds: bindep builds its grammar each time


def _packages(profiles: list[str]) -> set[str]:
    """Packages bindep installs for these profiles (the bindep command adds 'default' when given none)."""
    return {rule[0] for rule in _depends().active_rules(profiles)}


@pytest.mark.parametrize('platform, runtime, build_only, test_only', [
    ('rpm', 'libvirt-libs', 'libvirt-devel', 'qemu-img'),
    ('dpkg', 'libvirt0', 'libvirt-dev', 'qemu-utils'),
])
def test_bindep_profiles(platform, runtime, build_only, test_only):
    """The image gets the runtime library; compilers only in the builder stage; qemu only for tests."""
    default = _packages(['platform:' + platform, 'default'])
    assert runtime in default and build_only not in default and test_only not in default
    assert build_only in _packages(['platform:' + platform, 'compile'])
    assert test_only in _packages(['platform:' + platform, 'test'])
