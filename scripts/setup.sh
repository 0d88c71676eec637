#!/usr/bin/env bash
# Prepare a machine for developing and testing backingchain.qcow2.
#
#   1. Debian packages listed in scripts/apt-packages.txt and any
#      scripts/apt-packages-*.txt (only the missing ones are installed).
#   2. A virtual environment at <repo>/.venv from requirements-dev.txt and
#      any requirements-*.txt (pip runs only when one of them or the Python
#      changed).
#   3. A virtual environment .venvs/ansible-core-X.Y for each other ansible-core
#      version in scripts/ansible-core-versions.txt (that version plus
#      requirements.txt).
#   4. The offline pip bootstrap that ansible-test looks for in its cache, for
#      every ansible-core version.
#   5. In each of these venvs, the bytecode cache for what module tasks import
#      from their payload zip (scripts/lib/ansiballz_pyc_cache.py).
#
# Idempotent and quick on re-run. Runs as root, or as a user with sudo.
# Environment: PYTHON (interpreter for the venv, default python3),
# SETUP_SKIP_APT=1 (skip step 1, e.g. on a machine you manage yourself).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- apt ----

# Run as root directly, otherwise through sudo when it exists.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

# Another process (unattended upgrades, a parallel setup) may hold the apt or
# dpkg locks for minutes. DPkg::Lock::Timeout makes apt wait for the dpkg
# lock; the retry loop also covers the lists lock taken by 'apt-get update'.
apt_get() {
    local attempt rc out
    out="$(mktemp)"
    for attempt in $(seq 1 40); do
        rc=0
        # Show apt's output as it comes, and keep it to spot lock errors.
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 "$@" 2>&1 | tee "$out" >&2 || rc=$?
        if [[ $rc -eq 0 ]]; then
            rm -f "$out"
            return 0
        fi
        if grep -qiE 'could not get lock|unable to lock|is another process using it' "$out"; then
            log "apt is busy (attempt $attempt), waiting 15s ..."
            sleep 15
            continue
        fi
        rm -f "$out"
        return "$rc"
    done
    die "apt stayed locked for 10 minutes"
}

# A part of the project with its own needs adds its own list file.
apt_package_files() {
    local f
    for f in "$REPO"/scripts/apt-packages.txt "$REPO"/scripts/apt-packages-*.txt; do
        [[ -f "$f" ]] && printf '%s\n' "$f"
    done
    return 0
}

apt_packages() {
    apt_package_files | xargs sed -e 's/#.*//' -e 's/[[:space:]]\+$//' -e '/^[[:space:]]*$/d' | sort -u
}

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# True when apt has no candidate for a package, i.e. the lists are missing
# or too old to know it: then 'apt-get update' is needed.
no_candidate() {
    local cand
    cand="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    [[ -z "$cand" || "$cand" == "(none)" ]]
}

install_apt_packages() {
    if [[ "${SETUP_SKIP_APT:-0}" == 1 ]]; then
        log "SETUP_SKIP_APT=1: not checking Debian packages"
        return
    fi
    command -v dpkg-query >/dev/null 2>&1 || die "not a Debian-like system (no dpkg-query); install $(apt_packages | xargs) yourself and set SETUP_SKIP_APT=1"

    local pkg missing=()
    while read -r pkg; do
        is_installed "$pkg" || missing+=("$pkg")
    done < <(apt_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "Debian packages: all present"
        return
    fi
    log "Debian packages to install: ${missing[*]} (waits while apt is busy elsewhere)"

    local need_update=0
    for pkg in "${missing[@]}"; do
        no_candidate "$pkg" && need_update=1
    done
    if [[ $need_update -eq 1 ]]; then
        log "apt-get update (package lists do not know every package)"
        apt_get update -q
    fi
    # Stale lists can point at files the mirror no longer has: update once and retry.
    if ! apt_get install -y -q --no-install-recommends "${missing[@]}"; then
        log "install failed; refreshing package lists and retrying once"
        apt_get update -q
        apt_get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# --------------------------------------------------------------- venv ----

python_ok() {
    "$1" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))' 2>/dev/null
}

requirement_files() {
    local f
    for f in "$REPO"/requirements-*.txt; do  # requirements-dev.txt and any others
        [[ -f "$f" ]] && printf '%s\n' "$f"
    done
    return 0
}

# pip runs again when this fingerprint changes.
venv_fingerprint() {
    {
        "$PYTHON" -c 'import sys; print(sys.version)'
        requirement_files | xargs cat
    } | sha256sum | cut -d' ' -f1
}

setup_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
    python_ok "$PYTHON" || die "$PYTHON is not Python 3.11-3.13 (ansible-core 2.19 controller); set PYTHON=..."

    local stamp="$VENV/.setup-stamp" want
    want="$(venv_fingerprint)"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && python_ok "$VENV/bin/python"; then
        log "venv: up to date ($VENV)"
        return
    fi

    if [[ ! -x "$VENV/bin/python" ]] || ! python_ok "$VENV/bin/python"; then
        log "venv: creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local req args=()
    while read -r req; do
        args+=(-r "$req")
    done < <(requirement_files)
    log "venv: installing $(requirement_files | xargs -n1 basename | xargs)"
    pip_install "$VENV" "${args[@]}"
    printf '%s\n' "$want" >"$stamp"
    log "venv: ready"
}

pip_install() {
    local venv="$1"
    shift
    # Some machines configure extra local index locations that do not exist;
    # pip warns once per package about them. Harmless, so filter them out.
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
        | { grep -v "^WARNING: Location 'file://.*' is ignored" || true; }; then
        die "pip install $* failed"
    fi
}

# ------------------------------------------- other ansible-core versions ----

core_versions() {
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$REPO/scripts/ansible-core-versions.txt"
}

# .venvs/ansible-core-X.Y: ansible-core X.Y and requirements.txt, as a user
# installs them; rebuilt when the Python, the version or requirements.txt change.
setup_core_venv() {
    local version="$1" venv="$REPO/.venvs/ansible-core-$1" next want
    next="${version%.*}.$((${version#*.} + 1))"
    want="$({ "$PYTHON" -c 'import sys; print(sys.version)'; echo "$version"; cat "$REPO/requirements.txt"; } | sha256sum | cut -d' ' -f1)"
    if [[ -x "$venv/bin/ansible-test" && -f "$venv/.setup-stamp" && "$(cat "$venv/.setup-stamp")" == "$want" ]]; then
        log "ansible-core $version: up to date ($venv)"
        return
    fi
    log "ansible-core $version: creating $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    pip_install "$venv" "ansible-core>=$version,<$next" -r "$REPO/requirements.txt"
    printf '%s\n' "$want" >"$venv/.setup-stamp"
}

# ------------------------------------------------- ansible-test offline ----

# ansible-test downloads get-pip-<ver>.py for every venv it creates, unless
# ~/.ansible/test/cache/get_pip_<ver>.py exists. Seed our stand-in there.
seed_ansible_test_pip() {
    local venv="$1" src="$REPO/scripts/lib/get_pip_standin.py" reqs ver dest
    reqs="$("$venv/bin/python" -c 'import ansible_test, os; print(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py"))')"
    ver="$(sed -n "s/^[[:space:]]*pip='\([0-9.]*\)',.*/\1/p" "$reqs" | head -n1)"
    [[ -n "$ver" ]] || die "cannot find the pip version ansible-test bootstraps in $reqs"
    dest="$HOME/.ansible/test/cache/get_pip_${ver//./_}.py"
    if [[ -f "$dest" ]] && ! grep -q 'backingchain.qcow2 offline get-pip stand-in' "$dest"; then
        log "ansible-test: keeping existing $dest (not ours)"
        return
    fi
    if ! cmp -s "$src" "$dest"; then
        mkdir -p "$(dirname "$dest")"
        cp "$src" "$dest"
        log "ansible-test: seeded offline pip $ver bootstrap at $dest"
    fi
}

# ------------------------------------- bytecode cache for module tasks ----

# scripts/lib/ansiballz_pyc_cache.py (why it exists: see that file) into a test venv's site-packages, with a
# .pth file that installs it in every interpreter of the venv. Test venvs only: the collection never ships it.
install_zip_pyc_cache() {
    local venv="$1" src="$REPO/scripts/lib/ansiballz_pyc_cache.py" site pth
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    pth='import ansiballz_pyc_cache; ansiballz_pyc_cache.install()'
    if ! cmp -s "$src" "$site/ansiballz_pyc_cache.py" || [[ "$(cat "$site/ansiballz_pyc_cache.pth" 2>/dev/null)" != "$pth" ]]; then
        cp "$src" "$site/ansiballz_pyc_cache.py"
        printf '%s\n' "$pth" >"$site/ansiballz_pyc_cache.pth"
        log "module tasks' bytecode cache: installed in $venv"
    fi
}

install_apt_packages
setup_venv
seed_ansible_test_pip "$VENV"
install_zip_pyc_cache "$VENV"
while read -r version; do
    setup_core_venv "$version"
    seed_ansible_test_pip "$REPO/.venvs/ansible-core-$version"
    install_zip_pyc_cache "$REPO/.venvs/ansible-core-$version"
done < <(core_versions)
log "done"
