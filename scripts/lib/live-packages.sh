# Installs the Debian packages of the live tests (scripts/apt-packages-live.txt) on a fresh machine.
# Source it, don't run it; the sourcing script defines log().
# shellcheck shell=bash

LIVE_PACKAGES_LIST="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/apt-packages-live.txt"

apt_install_live_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2046
    apt-get install -y -qq --no-install-recommends $(grep -v '^\s*#' "$LIVE_PACKAGES_LIST")
}

# ensure_live_packages BIN...: installs the packages when one of these executables is missing.
ensure_live_packages() {
    local missing=0 bin
    for bin in "$@"; do
        [ -x "$bin" ] || { log "missing $bin"; missing=1; }
    done
    [ "$missing" = 0 ] && return 0
    log "installing Debian packages from scripts/apt-packages-live.txt"
    apt_install_live_packages
}
