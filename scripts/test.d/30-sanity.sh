#!/usr/bin/env bash
# ansible-test sanity: every sanity test on the controller Python, then
# 'compile' and 'import' again on each other target Python that
# tests/config.yml allows and this machine has (catches plugin code that
# parses or imports only on newer Pythons). Ignore files must stay empty.
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
rc=0
ansible-test sanity --python "$controller" --requirements --color no || rc=1

others=()
for v in $(target_python_versions); do
    [[ "$v" == "$controller" ]] || others+=("$v")
done
bindir="$REPO/tests/output/pythons"
have="$(expose_pythons "$bindir" "${others[@]}")"
for v in $have; do
    PATH="$bindir:$PATH" ansible-test sanity --test compile --test import --python "$v" --requirements --color no || rc=1
done
exit $rc
