#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Build the smallest guest that runs the QEMU guest agent, for the live tests of frozen (quiesced) points:
# Debian's kernel, booted directly by libvirt (<kernel>/<initrd>), and an initramfs holding busybox, qemu-ga
# with the shared libraries it needs, and the virtio and ext4 modules. Its init mounts the ext4 file system
# on /dev/vda at /mnt and runs qemu-ga on the org.qemu.guest_agent.0 port, so guest-fsfreeze-freeze freezes
# a real file system.
#
# Usage: agent-guest.sh [DIR]   (default $BCQ_AGENT_GUEST_DIR or /var/cache/backingchain-live/agent-guest)
# Prints DIR; DIR/vmlinux and DIR/initrd.img are then ready (0755 dir, 0644 files: qemu's user reads them).
# Built once per kernel, qemu-guest-agent and busybox version (DIR/stamp); later runs reuse the build.
set -euo pipefail
umask 022

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:-${BCQ_AGENT_GUEST_DIR:-/var/cache/backingchain-live/agent-guest}}
# Loaded in the guest, dependencies first (read from each .ko's modinfo: Debian builds these as modules).
MODULES=(virtio_pci virtio_blk virtio_console crc32c_generic ext4)

log() { echo "agent-guest: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib/live-packages.sh
source "$SCRIPT_DIR/lib/live-packages.sh"

# The versioned kernel package behind Debian's linux-image-amd64 (e.g. linux-image-6.1.0-50-amd64).
kernel_package() {
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
    if [ -z "$pkg" ]; then
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
    fi
    [ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64"
    echo "$pkg"
}

# Prints the module names in load order: each after the modules its .modinfo 'depends=' names.
module_order() {
    local moddir=$1 done=" " name
    visit() {
        local mod=$1 ko dep
        case "$done" in *" $mod "*) return 0 ;; esac
        ko=$(find "$moddir" -name "$mod.ko" | head -1)
        [ -n "$ko" ] || die "module $mod.ko is not in the kernel package"
        for dep in $(grep -a -o 'depends=[a-z0-9_,-]*' "$ko" | head -1 | cut -d= -f2 | tr ',' ' '); do
            visit "$dep"
        done
        done="$done$mod "
        echo "$mod"
    }
    for name in "${MODULES[@]}"; do
        visit "$name"
    done
}

write_init() {
    cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /mnt /run /var/run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for mod in $(cat /modules.order); do
    insmod "/modules/$mod.ko" || echo "agent-guest: insmod $mod failed"
done
# Dirty data stays in the page cache until something syncs it (no periodic writeback, a long journal
# commit interval): only a freeze puts a fresh write on the disk, so a point shows whether it was frozen.
echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 360000 >/proc/sys/vm/dirty_expire_centisecs
for _ in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.05; done
if [ -b /dev/vda ]; then
    mount -t ext4 -o commit=3600 /dev/vda /mnt && echo "agent-guest: /dev/vda mounted on /mnt"
fi
port=
for _ in $(seq 1 100); do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && [ -c "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { echo "agent-guest: no org.qemu.guest_agent.0 port"; exec sleep 1000000; }
echo "agent-guest: qemu-ga on $port"
while :; do
    /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run
    echo "agent-guest: qemu-ga exited ($?), restarting"
    sleep 1
done
EOF
    chmod 0755 "$1"
}

# The uncompressed kernel (an ELF with a PVH entry, which qemu boots directly) from Debian's xz-compressed
# bzImage: under TCG, unpacking the bzImage in the guest took 11 of a 24 s boot; the ELF boots in 9 s.
# A kernel that is not xz-compressed is used as it is.
unpack_kernel() {
    python3 - "$1" "$2" <<'PY'
import lzma, shutil, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    shutil.copyfile(sys.argv[1], sys.argv[2])
else:
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    if elf[:4] != b"\x7fELF":
        sys.exit("the kernel's xz payload is not an ELF image")
    open(sys.argv[2], "wb").write(elf)
PY
}

# Copies a host file into the tree at the same path (symlinks resolved: the initramfs holds real files).
copy_in() {
    local root=$1 file=$2
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
}

build() {
    local work=$1 kpkg=$2 root moddir lib mod
    root=$work/root
    log "downloading $kpkg"
    (cd "$work" && apt-get download -q "$kpkg") 2>&1 | { grep -v '^W: Download is performed unsandboxed' || true; } >&2
    ls "$work"/"$kpkg"_*.deb >/dev/null 2>&1 || die "apt-get download $kpkg failed"
    dpkg-deb --fsys-tarfile "$work"/"$kpkg"_*.deb \
        | tar -x -C "$work" --wildcards './boot/vmlinuz-*' './lib/modules/*/virtio*.ko' './lib/modules/*/ext4.ko' \
              './lib/modules/*/jbd2.ko' './lib/modules/*/mbcache.ko' './lib/modules/*/crc16.ko' \
              './lib/modules/*/crc32c_generic.ko'
    moddir=$(echo "$work"/lib/modules/*)
    mkdir -p "$root/modules" "$root/bin" "$root/usr/sbin"
    module_order "$moddir" >"$root/modules.order"
    while read -r mod; do
        cp "$(find "$moddir" -name "$mod.ko" | head -1)" "$root/modules/"
    done <"$root/modules.order"
    cp /bin/busybox "$root/bin/busybox"
    cp /usr/sbin/qemu-ga "$root/usr/sbin/qemu-ga"
    for lib in $(ldd /usr/sbin/qemu-ga | grep -o '/[^ ]*'); do
        copy_in "$root" "$lib"
    done
    write_init "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"
    unpack_kernel "$work"/boot/vmlinuz-* "$work/vmlinux"
    log "built: modules $(tr '\n' ' ' <"$root/modules.order")"
}

ensure_live_packages /usr/sbin/qemu-ga /bin/busybox /usr/bin/cpio /usr/sbin/mkfs.ext4 /usr/sbin/debugfs \
    /usr/bin/dpkg-deb
kpkg=$(kernel_package)
stamp="$kpkg $(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p') qemu-ga $(dpkg-query -W -f '${Version}' qemu-guest-agent)"
stamp="$stamp busybox $(dpkg-query -W -f '${Version}' busybox-static) init $(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
if [ -f "$DIR/stamp" ] && [ "$(cat "$DIR/stamp")" = "$stamp" ] && [ -s "$DIR/vmlinux" ] && [ -s "$DIR/initrd.img" ]; then
    log "reusing $DIR ($stamp)"
    echo "$DIR"
    exit 0
fi
mkdir -p "$DIR"
work=$(mktemp -d "$DIR.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
build "$work" "$kpkg"
install -m 0644 "$work/vmlinux" "$DIR/vmlinux"
install -m 0644 "$work/initrd.img" "$DIR/initrd.img"
echo "$stamp" >"$DIR/stamp"
chmod 0755 "$DIR"
log "built $DIR ($stamp)"
echo "$DIR"
