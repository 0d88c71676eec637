#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Live libvirt layer tests: real libvirtd + TCG qemu domains (tests/live). Needs root.
# Run by scripts/test.sh with the venv active and $REPO exported; also runs standalone.
# test.sh: about 460 s
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export REPO
cd "$REPO"

log() { echo "60-live: $*" >&2; }

# Scratch space for images, reachable by the libvirt-qemu user (0755, not under a 0700 dir).
BCQ_LIVE_TMPDIR=$(mktemp -d /var/tmp/bcq-live-run.XXXXXX)
chmod 0755 "$BCQ_LIVE_TMPDIR"
export BCQ_LIVE_TMPDIR

# libvirt-down.sh only stops what libvirt-up.sh started; the pytest session runs it too,
# this trap covers a pytest that was killed before its teardown.
cleanup() {
    bash "$REPO/scripts/libvirt-down.sh" || true
    rm -rf "$BCQ_LIVE_TMPDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=../lib/live-packages.sh
source "$REPO/scripts/lib/live-packages.sh"

if ! python -c 'import libvirt' 2>/dev/null; then
    if ! pkg-config --exists libvirt 2>/dev/null || ! command -v gcc >/dev/null; then
        log "installing the Debian packages libvirt-python builds against"
        apt_install_live_packages
    fi
    log "building libvirt-python against the host's libvirt"
    python -m pip install -q -r "$REPO/requirements-live.txt"
fi
python -c 'import pytest' 2>/dev/null || python -m pip install -q pytest

# libvirt-up.sh (called by the test session) installs the daemons and qemu if they are missing.
python -m pytest tests/live -p no:cacheprovider -q -rA --durations=5 "$@"
