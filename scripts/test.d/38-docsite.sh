#!/usr/bin/env bash
# The docs site (scripts/build-docsite.sh: antsibull-docs sphinx-init and Sphinx, warnings as errors,
# offline) opened page by page in headless Chromium: every module, role and filter page and every
# guide loads with no console error and nothing from the network, each guide shows its chain
# pictures; screenshots in tests/output/screenshots/docsite/.
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

exec python -m pytest tests/browser/test_browser.py tests/browser/test_docsite.py
