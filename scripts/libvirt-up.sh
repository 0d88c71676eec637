#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Start virtlogd, virtlockd and libvirtd without systemd, as root, for the live tests.
#
# Idempotent: a daemon that already runs is left alone and NOT recorded; only the daemons
# started here are recorded (pidfile copies in $BCQ_LIVE_STATE_DIR), so that
# scripts/libvirt-down.sh stops exactly those. Installs the Debian packages from
# scripts/apt-packages-live.txt when a needed binary is missing (fresh CI machine), and gives
# /dev/kvm, when it exists, the group and mode udev would give it (see grant_kvm_to_group).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${BCQ_LIVE_STATE_DIR:-/run/backingchain-live}
URI=${BCQ_LIBVIRT_URI:-qemu:///system}
WAIT_SECONDS=${BCQ_LIBVIRT_WAIT_SECONDS:-60}
# BCQ_KVM_DEVICE: the KVM device node to check (tests point it at a node of their own).
DAEMONS=(virtlogd virtlockd libvirtd)   # start order: libvirtd needs virtlogd for qemu logs

log() { echo "libvirt-up: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (libvirtd manages qemu:///system)"

# shellcheck source=lib/live-packages.sh
source "$SCRIPT_DIR/lib/live-packages.sh"

# Prints the pid recorded in a pidfile if that process is alive and is the named daemon.
live_pid() {
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
    echo "$pid"
}

start_daemon() {
    local name=$1 pid
    if pid=$(live_pid "$name" "/run/$name.pid"); then
        log "$name already running (pid $pid)$([ -e "$STATE_DIR/$name.pid" ] && echo ', started by us' || echo ', not ours: left alone')"
        return 0
    fi
    rm -f "$STATE_DIR/$name.pid"
    "/usr/sbin/$name" -d
    for _ in $(seq 1 50); do   # the daemon writes its pidfile right after forking
        if pid=$(live_pid "$name" "/run/$name.pid"); then
            echo "$pid" >"$STATE_DIR/$name.pid"
            log "started $name (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not start (no live pid in /run/$name.pid)"
}

# What udev's rule (KERNEL=="kvm", GROUP="kvm", MODE="0660") does on an ordinary host. Without it
# /dev/kvm can exist yet be closed to the qemu user (libvirt-qemu, group kvm): libvirtd then finds its
# cached qemu capabilities stale ("KVM was enabled when probing ..., but it is not available now") and
# re-probes qemu before every domain start, about 40 s each. No /dev/kvm: nothing to do (TCG).
grant_kvm_to_group() {
    local dev=${BCQ_KVM_DEVICE:-/dev/kvm} group mode
    [ -c "$dev" ] || { log "no $dev: qemu domains run on TCG"; return 0; }
    getent group kvm >/dev/null || { log "no kvm group: $dev left as it is"; return 0; }
    group=$(stat -c %G "$dev")
    mode=$(stat -c %a "$dev")
    if { [ "$group" = kvm ] && [ $(( 8#$mode & 8#060 )) -eq $(( 8#060 )) ]; } \
        || [ $(( 8#$mode & 8#006 )) -eq $(( 8#006 )) ]; then
        log "$dev is usable by the kvm group (group $group, mode $mode)"
        return 0
    fi
    if chgrp kvm "$dev" && chmod 0660 "$dev"; then
        log "$dev was group $group mode $mode, unusable by the qemu user: set to group kvm, mode 0660 (as udev does)"
    else
        log "WARNING: could not give $dev to the kvm group; every domain start may wait for libvirtd to re-probe qemu"
    fi
}

ensure_live_packages /usr/sbin/libvirtd /usr/sbin/virtlogd /usr/sbin/virtlockd /usr/bin/virsh \
    /usr/bin/qemu-system-x86_64 /usr/bin/qemu-img /usr/bin/qemu-io
grant_kvm_to_group
mkdir -p "$STATE_DIR" /run/libvirt /var/lib/libvirt/qemu /var/log/libvirt/qemu /var/cache/libvirt/qemu
for daemon in "${DAEMONS[@]}"; do
    start_daemon "$daemon"
done

deadline=$((SECONDS + WAIT_SECONDS))
until timeout 10 virsh -c "$URI" list --all >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "virsh -c $URI did not answer within ${WAIT_SECONDS}s"
    sleep 0.2
done
log "virsh -c $URI answers"
