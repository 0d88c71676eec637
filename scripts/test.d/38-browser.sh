#!/usr/bin/env bash
# Pages people look at, opened in headless Chromium (selenium, chromium-driver; the network cut off):
# - the docs site (scripts/build-docsite.sh: antsibull-docs sphinx-init and Sphinx, warnings as errors,
#   offline): every module, role and filter page and every guide loads with no console error and
#   nothing from the network; each guide shows its chain pictures;
# - the HTML reports of chain_flatten and snapshot_backup, written by real runs of the roles on
#   localhost: chain pictures before and after, tables sorted by a click.
# Screenshots are kept in tests/output/screenshots/.
# test.sh: about 90 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

exec python -m pytest -n 2 --dist loadfile tests/browser
