#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Undo scripts/libvirt-up.sh: destroy and undefine the test domains (name prefix
# $BCQ_TEST_DOMAIN_PREFIX), then stop exactly the daemons that libvirt-up.sh recorded as
# started by it. Daemons it did not start are left running. Safe to run any number of times.
set -uo pipefail

STATE_DIR=${BCQ_LIVE_STATE_DIR:-/run/backingchain-live}
URI=${BCQ_LIBVIRT_URI:-qemu:///system}
PREFIX=${BCQ_TEST_DOMAIN_PREFIX:-bcq-test-}
STOP_ORDER=(libvirtd virtlockd virtlogd)

log() { echo "libvirt-down: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "ERROR: must run as root"; exit 1; }

remove_test_domains() {
    local dom
    timeout 10 virsh -c "$URI" list --all >/dev/null 2>&1 || return 0
    for dom in $(timeout 10 virsh -c "$URI" list --all --name | grep "^$PREFIX" || true); do
        timeout 30 virsh -c "$URI" destroy "$dom" >/dev/null 2>&1 || true
        timeout 30 virsh -c "$URI" undefine "$dom" --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 \
            || timeout 30 virsh -c "$URI" undefine "$dom" >/dev/null 2>&1 || true
        log "removed domain $dom"
    done
}

# A qemu left behind by a test domain (e.g. libvirtd died first) is killed by its libvirt pidfile.
kill_orphan_test_qemus() {
    local pidfile pid
    for pidfile in /run/libvirt/qemu/"$PREFIX"*.pid; do
        [ -s "$pidfile" ] || continue
        pid=$(tr -dc '0-9' <"$pidfile")
        if [ -n "$pid" ] && grep -q "guest=$PREFIX" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null && log "killed leftover qemu pid $pid ($pidfile)"
        fi
    done
}

stop_recorded_daemon() {
    local name=$1 record="$STATE_DIR/$1.pid" pid
    [ -s "$record" ] || return 0
    pid=$(tr -dc '0-9' <"$record")
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 150); do
            [ -e "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -e "/proc/$pid" ]; then
            kill -KILL "$pid" 2>/dev/null
            log "killed $name (pid $pid) after 15s"
        else
            log "stopped $name (pid $pid)"
        fi
    fi
    rm -f "$record"
}

remove_test_domains
for daemon in "${STOP_ORDER[@]}"; do
    stop_recorded_daemon "$daemon"
done
kill_orphan_test_qemus
exit 0
