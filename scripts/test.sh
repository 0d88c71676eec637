#!/usr/bin/env bash
# Run every test stage of backingchain.qcow2 (THE test command).
#
#   scripts/test.sh                 # all stages
#   scripts/test.sh sanity units    # only stages whose file name contains one of the words
#   scripts/test.sh '[12]0-*'       # shell patterns work too
#
# Stages are the executable-or-not *.sh files in scripts/test.d/, run in
# lexical order with the venv active, REPO exported and the repo as working
# directory. A stage exits 0 (passed), 77 (skipped: nothing to run; it prints
# why) or anything else (failed). All selected stages run even when one
# fails; the last line is "N passed, M failed" and the exit status is non-zero
# when a stage failed. Each stage's output is also kept in
# tests/output/stages/<stage>.log. The stages of the other ansible-core
# versions (NN-<kind>-core-X.Y) of one kind run side by side (see below).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO
STAGE_DIR="$REPO/scripts/test.d"
LOG_DIR="$REPO/tests/output/stages"
SKIP_RC=77

"$REPO/scripts/setup.sh"

selected() {
    local name="$1" pat
    [[ $# -eq 1 ]] && return 0  # no patterns: everything
    shift
    for pat in "$@"; do
        # shellcheck disable=SC2053  # $pat is deliberately a glob
        [[ "$name" == *$pat* ]] && return 0
    done
    return 1
}

stages=()
for f in "$STAGE_DIR"/*.sh; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .sh)"
    selected "$name" "$@" && stages+=("$name")
done
if [[ ${#stages[@]} -eq 0 ]]; then
    echo "no stage in scripts/test.d matches: $*" >&2
    exit 2
fi

mkdir -p "$LOG_DIR"
trap 'echo; echo "interrupted" >&2; exit 130' INT

results=() times=() passed=0 failed=0 skipped=0

run_stage() {
    (
        cd "$REPO"
        # shellcheck disable=SC1091  # created by setup.sh
        source "$REPO/.venv/bin/activate"
        exec bash "$STAGE_DIR/$1.sh"
    )
}

record() {
    local name="$1" rc="$2" elapsed="$3" result
    case $rc in
        0) result=PASS; passed=$((passed + 1)) ;;
        "$SKIP_RC") result=SKIP; skipped=$((skipped + 1)) ;;
        *) result="FAIL (exit $rc)"; failed=$((failed + 1)) ;;
    esac
    printf '==== stage %s: %s in %ss ====\n' "$name" "$result" "$elapsed"
    results+=("$result")
    times+=("$elapsed")
}

# The stages of the other ansible-core versions (NN-<kind>-core-X.Y) of one kind
# run side by side, one per version: each mostly waits on one process at a
# time, so two of them on the machine's two cores take the time of one. Their
# output is shown, stage by stage, when all of them have ended.
group_at() {
    local first="${stages[$1]}" j
    printf '%s\n' "$first"
    [[ "$first" == *-core-* ]] || return 0
    for ((j = $1 + 1; j < ${#stages[@]}; j++)); do
        [[ "${stages[$j]}" == "${first%-core-*}"-core-* ]] || break
        printf '%s\n' "${stages[$j]}"
    done
}

i=0
while ((i < ${#stages[@]})); do
    mapfile -t group < <(group_at "$i")
    i=$((i + ${#group[@]}))
    if [[ ${#group[@]} -eq 1 ]]; then
        name="${group[0]}"
        printf '\n==== stage %s ====\n' "$name"
        start=$SECONDS
        set +e
        run_stage "$name" 2>&1 | tee "$LOG_DIR/$name.log"
        rc=${PIPESTATUS[0]}
        set -e
        record "$name" "$rc" $((SECONDS - start))
        continue
    fi
    printf '\n==== stages %s, side by side ====\n' "${group[*]}"
    start=$SECONDS
    began=$(date +%s)
    for name in "${group[@]}"; do
        (
            set +e
            run_stage "$name" >"$LOG_DIR/$name.log" 2>&1
            printf '%s %s\n' "$?" "$(($(date +%s) - began))" >"$LOG_DIR/$name.result"
        ) &
    done
    wait
    for name in "${group[@]}"; do
        printf '\n==== stage %s ====\n' "$name"
        cat "$LOG_DIR/$name.log"
        read -r rc elapsed <"$LOG_DIR/$name.result"
        record "$name" "$rc" "$elapsed"
    done
    echo "(side by side: ${group[*]} took $((SECONDS - start))s together)"
done

# CI keeps only the end of the output: repeat what each failed stage said about its failure here.
failure_digest() {
    local name="$1"
    printf '\n---- why %s failed (from %s) ----\n' "$name" "tests/output/stages/$name.log"
    grep -E 'FAILED|^E  |ERROR|Error|FATAL|fatal:|Traceback|failed=[1-9]|stopped' "$LOG_DIR/$name.log" | tail -n 40 || true
    echo '---- its last lines ----'
    tail -n 15 "$LOG_DIR/$name.log"
}
for i in "${!stages[@]}"; do
    [[ "${results[$i]}" == FAIL* ]] && failure_digest "${stages[$i]}"
done

printf '\n%-28s %-16s %8s\n' STAGE RESULT SECONDS
for i in "${!stages[@]}"; do
    printf '%-28s %-16s %8s\n' "${stages[$i]}" "${results[$i]}" "${times[$i]}"
done
printf '%-28s %-16s %8s\n' total "" "$SECONDS"
# Which ansible-core each stage ran with: the .venv's, or .venvs/ansible-core-X.Y for the *-core-X.Y stages.
core_of() { "$1/bin/python" -c 'from ansible.release import __version__; print(__version__)' 2>/dev/null || echo '?'; }
cores="$(core_of "$REPO/.venv") (stages without core-X.Y)"
for venv in "$REPO"/.venvs/ansible-core-*; do
    [[ -x "$venv/bin/python" ]] && cores+=", $(core_of "$venv") (core-${venv##*-})"
done
echo "ansible-core: $cores"
if [[ $skipped -gt 0 ]]; then
    echo "$skipped stage(s) skipped because they had nothing to run (see their output above)"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
