#!/usr/bin/env bash
# Fuzz the qcow2 engine with mutated qemu-made images (docs/hardening.md).
#
#   scripts/fuzz.sh --cases 100000          # the long run, every core
#   scripts/fuzz.sh --cases 1000 --jobs 2   # a short run
#   scripts/fuzz.sh --replay DIR|ARCHIVE    # one saved case
#   scripts/fuzz.sh --minimize DIR --name NAME --note TEXT   # keep a failure as a regression
#
# Results: tests/output/fuzz/summary.json, cases.jsonl, failures/<signature>/case-N/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    "$REPO/scripts/setup.sh" >/dev/null
    # shellcheck disable=SC1091  # created by setup.sh
    source "$REPO/.venv/bin/activate"
fi
exec python "$REPO/tests/fuzz/runner.py" "$@"
