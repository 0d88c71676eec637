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
# tests/output/stages/<stage>.log. Stages run side by side, one per core
# (see below), and print their wall time and CPU seconds.
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

declare -A result_of=() seconds_of=() cpu_of=()
passed=0 failed=0 skipped=0

run_stage() {
    (
        cd "$REPO"
        # shellcheck disable=SC1091  # created by setup.sh
        source "$REPO/.venv/bin/activate"
        exec bash "$STAGE_DIR/$1.sh"
    )
}

record() {
    local name="$1" rc="$2" elapsed="$3" cpu="$4" result
    case $rc in
        0) result=PASS; passed=$((passed + 1)) ;;
        "$SKIP_RC") result=SKIP; skipped=$((skipped + 1)) ;;
        *) result="FAIL (exit $rc)"; failed=$((failed + 1)) ;;
    esac
    printf '==== stage %s: %s in %ss (%ss of CPU) ====\n' "$name" "$result" "$elapsed" "$cpu"
    result_of[$name]=$result
    seconds_of[$name]=$elapsed
    cpu_of[$name]=$cpu
}

# Stages run side by side, as many at a time as the machine has cores (TEST_SLOTS
# overrides): most of them keep one core busy at a time (one ansible-playbook,
# one ansible-test, one pytest process), so on two cores two of them take little
# longer than one. A stage whose file has the line "# test.sh: runs alone" keeps
# every core busy itself (pytest -n auto) and runs with nothing beside it, its
# output shown as it comes. A stage run beside others writes to its log, shown
# when it ends. Stages start in lexical order, so the long ones are numbered
# before the short ones of their kind (55-fleet before 60-*, 65-demo last).
# No two stages share a service: only 60-live starts libvirtd, only 55-fleet
# the sshd fleet.
SLOTS="${TEST_SLOTS:-$(nproc 2>/dev/null || echo 1)}"
((SLOTS >= 1)) || SLOTS=1

runs_alone() { grep -q '^# test.sh: runs alone' "$STAGE_DIR/$1.sh"; }

# CHILDREN_CPU: CPU seconds (user + system) of the waited-for children of the calling shell. The builtin
# times writes to a file: in a pipe or $(...) it would run in a subshell, which has no children of its own.
children_cpu() {
    local file="$LOG_DIR/.times.$BASHPID"
    times >"$file"
    CHILDREN_CPU=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] }
                        printf "%d", t + 0.5 }' "$file")
    rm -f "$file"
}

declare -A pid_of=()
running=()

start_beside() {
    local name="$1"
    rm -f "$LOG_DIR/$name.result"
    (
        set +e
        began=$(date +%s)
        run_stage "$name" >"$LOG_DIR/$name.log" 2>&1
        rc=$?
        children_cpu
        printf '%s %s %s\n' "$rc" "$(($(date +%s) - began))" "$CHILDREN_CPU" >"$LOG_DIR/$name.result"
    ) &
    pid_of[$name]=$!
    running+=("$name")
    printf '\n==== stage %s started%s ====\n' "$name" "$( ((${#running[@]} > 1)) && printf ' (beside %s)' "${running[*]:0:${#running[@]}-1}")"
}

# Wait until at most $1 stages run beside each other; show and record each one that ended.
reap() {
    local limit="$1" name rc elapsed cpu still
    while ((${#running[@]} > limit)); do
        still=()
        for name in "${running[@]}"; do
            if [[ -e "$LOG_DIR/$name.result" ]]; then
                wait "${pid_of[$name]}" || true
                printf '\n==== stage %s ====\n' "$name"
                cat "$LOG_DIR/$name.log"
                read -r rc elapsed cpu <"$LOG_DIR/$name.result"
                record "$name" "$rc" "$elapsed" "$cpu"
            else
                still+=("$name")
            fi
        done
        running=(${still[@]+"${still[@]}"})
        ((${#running[@]} > limit)) && sleep 1
    done
    return 0
}

for name in "${stages[@]}"; do
    if ((SLOTS == 1)) || runs_alone "$name"; then
        reap 0
        printf '\n==== stage %s ====\n' "$name"
        start=$SECONDS
        children_cpu
        cpu_before=$CHILDREN_CPU
        set +e
        run_stage "$name" 2>&1 | tee "$LOG_DIR/$name.log"
        rc=${PIPESTATUS[0]}
        set -e
        children_cpu
        record "$name" "$rc" $((SECONDS - start)) $((CHILDREN_CPU - cpu_before))
    else
        reap $((SLOTS - 1))
        start_beside "$name"
    fi
done
reap 0

# CI keeps only the end of the output: repeat what each failed stage said about its failure here.
failure_digest() {
    local name="$1"
    printf '\n---- why %s failed (from %s) ----\n' "$name" "tests/output/stages/$name.log"
    grep -E 'FAILED|^E  |ERROR|Error|FATAL|fatal:|Traceback|failed=[1-9]|stopped' "$LOG_DIR/$name.log" | tail -n 40 || true
    echo '---- its last lines ----'
    tail -n 15 "$LOG_DIR/$name.log"
}
for name in "${stages[@]}"; do
    [[ "${result_of[$name]}" == FAIL* ]] && failure_digest "$name"
done

# SECONDS is each stage's own wall time; stages run beside others overlap, so they add up to more than the total.
printf '\n%-28s %-16s %8s %8s\n' STAGE RESULT SECONDS CPU
for name in "${stages[@]}"; do
    printf '%-28s %-16s %8s %8s\n' "$name" "${result_of[$name]}" "${seconds_of[$name]}" "${cpu_of[$name]}"
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
