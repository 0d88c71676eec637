#!/usr/bin/env bash
# Pure-Python tests under plain pytest: tests/unit (engine and plugin unit
# tests, ansible-test layout) and tests/repo (checks on the repository itself).
# test.sh: runs alone (pytest -n auto keeps every core busy)
# test.sh: about 60 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

dirs=()
for d in tests/unit tests/repo; do
    has_files "$d" 'test_*.py' && dirs+=("$d")
done
[[ ${#dirs[@]} -gt 0 ]] || skip "no test_*.py under tests/unit or tests/repo"

exec python -m pytest -n auto "${dirs[@]}"
