#!/usr/bin/env bash
# ansible-test sanity: every sanity test on the controller Python, then
# 'compile' and 'import' again on each other target Python that
# tests/config.yml allows and this machine has (catches plugin code that
# parses or imports only on newer Pythons). Ignore files must stay empty.
# SANITY_CONTROLLER_ONLY=1 (the stages of the other ansible-core versions)
# skips the other Pythons, the tests whose tool does not come with ansible-core
# (compile: the same Python; shellcheck: the system's) and pylint (lint of the
# code, half of the sanity time, with an older pylint): those run once, under
# the .venv's version.
# test.sh: about 150 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

for f in tests/sanity/ignore-*.txt; do
    if [[ -f "$f" ]] && grep -qv '^[[:space:]]*\(#.*\)\?$' "$f"; then
        echo "FAIL: $f has entries; fix the code instead of ignoring sanity errors"
        exit 1
    fi
done

tree="$(collection_tree)"
cd "$tree" || exit 1
echo "ansible-test runs in $tree"

controller="$(controller_python_version)"
skips=()
[[ "${SANITY_CONTROLLER_ONLY:-0}" == 1 ]] && skips=(--skip-test compile --skip-test shellcheck --skip-test pylint)
rc=0
ansible-test sanity --python "$controller" --requirements --color no "${skips[@]}" || rc=1

others=()
[[ "${SANITY_CONTROLLER_ONLY:-0}" == 1 ]] && exit $rc
for v in $(target_python_versions); do
    [[ "$v" == "$controller" ]] || others+=("$v")
done
bindir="$REPO/tests/output/pythons/$(stage_key)"
have="$(expose_pythons "$bindir" "${others[@]}")"
for v in $have; do
    PATH="$bindir:$PATH" ansible-test sanity --test compile --test import --python "$v" --requirements --color no || rc=1
done
exit $rc
