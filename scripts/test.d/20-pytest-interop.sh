#!/usr/bin/env bash
# Interop tests: the engine's results checked against qemu-img / qemu-io.
# test.sh: runs alone (pytest -n auto keeps every core busy)
# test.sh: about 660 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

has_files tests/interop 'test_*.py' || skip "no test_*.py under tests/interop"
command -v qemu-img >/dev/null || { echo "qemu-img missing: run scripts/setup.sh"; exit 1; }

exec python -m pytest -n auto --durations=15 tests/interop
