#!/usr/bin/env bash
# Every crash sweep of the interop tests, killing each operation at every one of its I/O events.
# The interop stage tries a sample of each sweep's events (tests/helpers/limits.py, crash_points);
# this is the exhaustive run, about 25 minutes on 2 cores. Extra arguments go to pytest.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$REPO/scripts/setup.sh"
cd "$REPO"
# shellcheck disable=SC1091  # created by setup.sh
source .venv/bin/activate
CRASH_POINTS=all exec python -m pytest -n auto -p no:cacheprovider \
    tests/interop/test_ops_crash.py tests/interop/test_bitmap_crash.py tests/interop/test_copy_ranges.py \
    tests/interop/test_backup_crash.py \
    -k "every_io_event or killed_anywhere or killed_at_every_step" "$@"
