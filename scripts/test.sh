#!/usr/bin/env bash
# Run every test stage of backingchain.qcow2 (THE test command).
#
#   scripts/test.sh                 # all stages
#   scripts/test.sh sanity units    # only stages whose file name contains one of the words
#   scripts/test.sh '[12]0-*'       # shell patterns work too
#
# Stages are the executable-or-not *.sh files in scripts/test.d/, run (in
# the order below) with the venv active, REPO exported and the repo as working
# directory. A stage exits 0 (passed), 77 (skipped: nothing to run; it prints
# why) or anything else (failed). All selected stages run even when one
# fails; the last line is "N passed, M failed" and the exit status is non-zero
# when a stage failed. Each stage's output is also kept in
# tests/output/stages/<stage>.log. Stages run side by side, one per core
# and more when cores are idle, longest first (see below), and print their wall
# time and CPU seconds.
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

# How stages share the machine. SLOTS stages run at a time, as many as the machine has cores (TEST_SLOTS
# overrides; 1 runs them one after the other, in lexical order): most stages keep one core busy at a time (one
# ansible-playbook, ansible-test or pytest process). A stage whose file has the line "# test.sh: runs alone"
# spreads over every core itself (pytest -n auto) and takes every slot; those stages run first, their output
# shown as it comes. Stages also wait (on fsync, qemu-img, ssh, guests), leaving cores idle: when at least half
# a core was idle over the last FILL_WINDOW seconds, one stage more than the slots starts, also beside a stage
# that runs alone (TEST_FILL=0 turns that off). Order, by the line "# test.sh: about N s" in a stage's file
# (its wall time on 2 cores beside another stage; none: 0): the stages that run alone shortest first, so that
# those filling the idle cores of the longest go on after it; then the others longest first, so that no long
# stage is left running by itself at the end.
# A stage run beside others writes to its log, shown when it ends (after the stage shown as it comes).
# No two stages share a service: only 60-live starts libvirtd, only 55-fleet the sshd fleet.
SLOTS="${TEST_SLOTS:-$(nproc 2>/dev/null || echo 1)}"
((SLOTS >= 1)) || SLOTS=1
CORES="$(nproc 2>/dev/null || echo 1)"
FILL="${TEST_FILL:-1}"
FILL_WINDOW="${TEST_FILL_WINDOW:-20}"
FILL_MILLICORES="${TEST_FILL_MILLICORES:-500}"  # idle thousandths of a core that let one more stage start

runs_alone() { grep -q '^# test.sh: runs alone' "$STAGE_DIR/$1.sh"; }
expected_seconds() { sed -n 's/^# test.sh: about \([0-9]*\) s.*/\1/p' "$STAGE_DIR/$1.sh" | head -n 1 | grep . || echo 0; }

# The start order (ties: lexical): the stages that run alone shortest first, then the others longest first.
if ((SLOTS > 1)); then
    alone=() others=()
    for name in "${stages[@]}"; do
        if runs_alone "$name"; then alone+=("$(expected_seconds "$name") $name"); else others+=("$(expected_seconds "$name") $name"); fi
    done
    stages=()
    while read -r _ name; do
        [[ -n "$name" ]] && stages+=("$name")
    done < <(printf '%s\n' ${alone[@]+"${alone[@]}"} | sort -k1,1n -k2,2; printf '%s\n' ${others[@]+"${others[@]}"} | sort -k1,1nr -k2,2)
fi

# CHILDREN_CPU: CPU seconds (user + system) of the waited-for children of the calling shell. The builtin
# times writes to a file: in a pipe or $(...) it would run in a subshell, which has no children of its own.
children_cpu() {
    local file="$LOG_DIR/.times.$BASHPID"
    times >"$file"
    CHILDREN_CPU=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] }
                        printf "%d", t + 0.5 }' "$file")
    rm -f "$file"
}

# The machine's idle time (idle + iowait) and busy time so far, in clock ticks, from /proc/stat.
idle_sample() {
    local _cpu user nice system idle iowait irq softirq steal
    read -r _cpu user nice system idle iowait irq softirq steal _ </proc/stat
    SAMPLE_IDLE=$((idle + iowait))
    SAMPLE_BUSY=$((user + nice + system + irq + softirq + steal))
    SAMPLE_AT=$SECONDS
}

# IDLE_MILLICORES: how many thousandths of a core were idle on average since the last idle_sample.
idle_since_sample() {
    local was_idle=$SAMPLE_IDLE was_busy=$SAMPLE_BUSY
    idle_sample
    local idle=$((SAMPLE_IDLE - was_idle)) busy=$((SAMPLE_BUSY - was_busy))
    IDLE_MILLICORES=$((idle + busy > 0 ? 1000 * CORES * idle / (idle + busy) : 0))
}

declare -A pid_of=() tail_of=()
running=() ended=()
shown_live=""

# Slots the running stages take: every slot for one that runs alone, one for any other.
slots_taken() {
    local name taken=0
    for name in ${running[@]+"${running[@]}"}; do
        if runs_alone "$name"; then taken=$((taken + SLOTS)); else taken=$((taken + 1)); fi
    done
    echo "$taken"
}

start_stage() {
    local name="$1" why="$2"
    rm -f "$LOG_DIR/$name.result"
    : >"$LOG_DIR/$name.log"
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
    if runs_alone "$name"; then
        printf '\n==== stage %s ====\n' "$name"
        tail -n +1 -f --pid="${pid_of[$name]}" "$LOG_DIR/$name.log" &
        tail_of[$name]=$!
        shown_live=$name
    else
        printf '\n==== stage %s started%s%s ====\n' "$name" \
            "$( ((${#running[@]} > 1)) && printf ' (beside %s)' "${running[*]:0:${#running[@]}-1}")" "$why"
    fi
    idle_sample  # the idle window starts again with each start
}

# Show and record the stages that have ended: the one shown as it comes at once, the others when it is over.
reap() {
    local name rc elapsed cpu still=()
    for name in ${running[@]+"${running[@]}"}; do
        if [[ -e "$LOG_DIR/$name.result" ]]; then
            wait "${pid_of[$name]}" || true
            ended+=("$name")
        else
            still+=("$name")
        fi
    done
    running=(${still[@]+"${still[@]}"})
    still=()
    for name in ${ended[@]+"${ended[@]}"}; do
        if [[ "$name" == "$shown_live" ]]; then
            wait "${tail_of[$name]}" || true
            shown_live=""
        elif [[ -n "$shown_live" ]]; then
            still+=("$name")
            continue
        else
            printf '\n==== stage %s ====\n' "$name"
            cat "$LOG_DIR/$name.log"
        fi
        read -r rc elapsed cpu <"$LOG_DIR/$name.result"
        record "$name" "$rc" "$elapsed" "$cpu"
    done
    ended=(${still[@]+"${still[@]}"})
    return 0
}

if ((SLOTS == 1)); then
    for name in "${stages[@]}"; do
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
    done
else
    idle_sample
    next=0
    while ((next < ${#stages[@]} || ${#running[@]} > 0 || ${#ended[@]} > 0)); do
        reap
        if ((next < ${#stages[@]})); then
            name="${stages[$next]}"
            taken=$(slots_taken)
            if runs_alone "$name"; then
                if ((${#running[@]} == 0 && ${#ended[@]} == 0)); then
                    start_stage "$name" ""
                    next=$((next + 1))
                    continue
                fi
            elif ((taken < SLOTS)); then
                start_stage "$name" ""
                next=$((next + 1))
                continue
            elif ((FILL == 1 && taken == SLOTS && SECONDS - SAMPLE_AT >= FILL_WINDOW)); then
                idle_since_sample
                if ((IDLE_MILLICORES >= FILL_MILLICORES)); then
                    start_stage "$name" "$(printf ', one more than the slots: %d.%02d cores idle over %d s' \
                        $((IDLE_MILLICORES / 1000)) $((IDLE_MILLICORES % 1000 / 10)) "$FILL_WINDOW")"
                    next=$((next + 1))
                    continue
                fi
            fi
        fi
        sleep 1
    done
fi

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
