"""Pages checked in headless Chromium; screenshots are kept in tests/output/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.backingchain.qcow2.tests.helpers.browser import Browser

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / 'tests' / 'output' / 'screenshots'


@pytest.fixture(scope='session')
def browser():
    session = Browser()
    yield session
    session.close()
