#!/usr/bin/env bash
# Fuzzing, short: replay every stored regression input, hypothesis-driven mutations, then a fixed-seed
# random run (FUZZ_CASES, default 600) on every core. The long run is scripts/fuzz.sh --cases 100000.
# test.sh: runs alone (pytest -n 2 and two fuzz workers keep every core busy)
# test.sh: about 70 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

command -v qemu-img >/dev/null || { echo "qemu-img missing: run scripts/setup.sh"; exit 1; }
python -m pytest -n 2 tests/fuzz
exec python tests/fuzz/runner.py --cases "${FUZZ_CASES:-600}" --seed "${FUZZ_SEED:-20250101}" --quiet
