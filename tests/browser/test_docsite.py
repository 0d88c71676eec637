"""The docs site, built as users would build it, opened page by page in headless Chromium."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, SCREENSHOTS

SITE = REPO / 'tests' / 'output' / 'docsite'
GUIDES = sorted(p.stem for p in (REPO / 'docs' / 'docsite' / 'rst').glob('*.rst'))
PLUGINS = sorted([p.stem + '_module' for p in (REPO / 'plugins' / 'modules').glob('*.py')]
                 + [p.name + '_role' for p in (REPO / 'roles').iterdir() if (p / 'meta' / 'argument_specs.yml').is_file()]
                 + [p.stem + '_filter' for p in (REPO / 'plugins' / 'filter').glob('*.py')])


@pytest.fixture(scope='module')
def html() -> Path:
    """The site, built by scripts/build-docsite.sh (Sphinx warnings are errors, nothing fetched)."""
    build = subprocess.run([str(REPO / 'scripts' / 'build-docsite.sh'), str(SITE)], capture_output=True, text=True,
                           check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return SITE / 'build' / 'html'


def _pictures_in(rst: Path) -> int:
    return len(re.findall(r'<svg [^>]*class="chain-diagram"', rst.read_text()))


def _check_page(browser, page: Path, name: str):
    assert page.is_file(), page
    view = browser.open(page, SCREENSHOTS / 'docsite' / ('%s.png' % name))
    assert view.console_errors == []
    assert [url for url in view.resources if not url.startswith('file://')] == []
    assert view.screenshot.stat().st_size > 10000
    return view


@pytest.mark.parametrize('guide', GUIDES)
def test_guide_shows_its_chain_pictures(browser, html, guide):
    view = _check_page(browser, html / 'docsite' / ('%s.html' % guide), guide)
    expected = _pictures_in(REPO / 'docs' / 'docsite' / 'rst' / ('%s.rst' % guide))
    assert len(view.chain_pictures) == expected
    for picture in view.chain_pictures:
        assert picture['width'] > 100 and picture['height'] > 40 and picture['boxes'] >= 1, picture


def test_guides_have_pictures():
    assert sum(_pictures_in(REPO / 'docs' / 'docsite' / 'rst' / ('%s.rst' % guide)) for guide in GUIDES) >= 12


@pytest.mark.parametrize('plugin', PLUGINS)
def test_plugin_page_loads(browser, html, plugin):
    view = _check_page(browser, html / ('%s.html' % plugin), plugin)
    name, kind = plugin.rsplit('_', 1)
    assert 'backingchain.qcow2.' + name in view.title
    if kind == 'module':  # what it does to a chain, pictured under the synopsis
        pictures = yaml.safe_load((REPO / 'docs' / 'docsite' / 'module-pictures.yml').read_text())[name]
        assert [picture['label'].split(':')[0] for picture in view.chain_pictures] == \
            [picture['title'].split(':')[0] for picture in pictures]
        assert all(picture['width'] > 100 and picture['boxes'] >= 1 for picture in view.chain_pictures)


def test_index_lists_the_guides(browser, html):
    view = _check_page(browser, html / 'index.html', 'index')
    text = (html / 'index.html').read_text()
    for guide in GUIDES:
        assert 'docsite/%s.html' % guide in text
    assert view.title
