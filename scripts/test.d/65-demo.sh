#!/usr/bin/env bash
# The README's main command: the demo playbook must run on localhost and print its report and summary.
# test.sh: about 95 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

log="$REPO/tests/output/demo.log"
mkdir -p "$(dirname "$log")"
"$REPO/scripts/demo.sh" >"$log" 2>&1 || { tail -40 "$log"; echo "FAIL: scripts/demo.sh exited non-zero"; exit 1; }
for expected in "# Chain flatten report" "golden base: demo-os-" "flattened: 1 chain(s)" "second run of the golden image task: changed=False" "restored point 1 is identical to the disk at point 1" "failed=0"; do
    grep -qF -- "$expected" "$log" || { tail -40 "$log"; echo "FAIL: the demo did not print: $expected"; exit 1; }
done
echo "demo ran: $(grep -c '^TASK' "$log") tasks, log in $log"
