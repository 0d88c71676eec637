#!/usr/bin/env bash
# ansible-test units: tests/unit/plugins/** in ansible-test's own venv (only
# ansible-test's unit requirements plus tests/unit/requirements.txt), on the
# controller Python and on the oldest target Python tests/config.yml allows,
# when this machine has it. UNITS_PYTHONS="3.11 3.12" overrides the list.
# UNITS_LEAN=1 (the stages of the other ansible-core versions) leaves out the
# engine's tests (tests/unit/plugins/module_utils/_qcow2): the engine imports
# nothing from ansible-core, so they run once, under the .venv's version.
# Without UNITS_PYTHONS, the controller Python runs only the controller plugins'
# tests when the oldest target Python is here to run them all: 10-pytest-unit
# has run the modules' and module_utils' tests on this Python and ansible-core.
# test.sh: about 140 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

has_files tests/unit/plugins 'test_*.py' || skip "no test_*.py under tests/unit/plugins"

tree="$(collection_tree)"
cd "$tree" || exit 1
echo "ansible-test runs in $tree"

controller="$(controller_python_version)"
if [[ -n "${UNITS_PYTHONS:-}" ]]; then
    read -r -a wanted <<<"$UNITS_PYTHONS"
else
    read -r -a targets <<<"$(target_python_versions)"
    wanted=("$controller")
    [[ "${targets[0]}" != "$controller" ]] && wanted+=("${targets[0]}")
fi
bindir="$REPO/tests/output/pythons/$(stage_key)"
have="$(expose_pythons "$bindir" "${wanted[@]}")"
[[ " $have " == *" $controller "* ]] || have="$controller $have"

targets=()
if [[ "${UNITS_LEAN:-0}" == 1 ]]; then
    mapfile -t targets < <(find tests/unit/plugins -name 'test_*.py' -not -path '*/module_utils/_qcow2/*' | sort)
fi
controller_tests=()
if [[ -z "${UNITS_PYTHONS:-}" && "$have" != "$controller" ]]; then
    mapfile -t controller_tests < <(find tests/unit/plugins -name 'test_*.py' -not -path '*/modules/*' \
        -not -path '*/module_utils/*' | sort)
fi
rc=0
for v in $have; do
    run=("${targets[@]}")
    [[ "$v" == "$controller" && ${#controller_tests[@]} -gt 0 ]] && run=("${controller_tests[@]}")
    PATH="$bindir:$PATH" ansible-test units --venv --python "$v" --requirements --color no "${run[@]}" || rc=1
done
exit $rc
