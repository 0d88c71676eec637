#!/usr/bin/env bash
# The collection as users get it (tests/galaxy): the ansible-galaxy build and what it ships, an
# execution environment's build context from ansible-builder, and the README's install path.
# test.sh: about 95 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

has_files tests/galaxy 'test_*.py' || skip "no test_*.py under tests/galaxy"
exec python -m pytest -n 2 --dist loadfile tests/galaxy
