#!/usr/bin/env bash
# ansible-test integration on this machine (no containers here): --local runs
# the targets under tests/integration/targets/ with the venv's ansible-core
# and Python, localhost as the managed node. Destructive targets are allowed:
# development and CI machines are disposable.
# test.sh: about 230 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

targets=()
for d in tests/integration/targets/*/; do
    [[ -f "$d/aliases" ]] || continue
    grep -qx 'hidden' "$d/aliases" && continue
    case "$(basename "$d")" in setup_* | prepare_*) continue ;; esac
    targets+=("$(basename "$d")")
done
[[ ${#targets[@]} -gt 0 ]] || skip "no integration targets under tests/integration/targets"

tree="$(collection_tree)"
cd "$tree" || exit 1
echo "ansible-test runs in $tree"

exec ansible-test integration --local --python "$(controller_python_version)" --allow-destructive --color no
