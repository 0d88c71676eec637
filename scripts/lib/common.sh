# Shared helpers for scripts/test.d/*.sh stages; source it, don't run it.
# shellcheck shell=bash

set -euo pipefail

# Stages normally run from scripts/test.sh, which exports REPO and activates
# the venv. Make a stage runnable on its own too: bash scripts/test.d/NN-x.sh
REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export REPO
if [[ -z "${VIRTUAL_ENV:-}" && -f "$REPO/.venv/bin/activate" ]]; then
    # shellcheck disable=SC1091
    source "$REPO/.venv/bin/activate"
fi
cd "$REPO" || exit 1

# Exit status scripts/test.sh reads as "skipped: nothing to run".
SKIP_RC=77

skip() {
    echo "SKIP: $*"
    exit "$SKIP_RC"
}

# True when a directory holds at least one file matching a name pattern.
has_files() {
    local dir="$1" pattern="$2"
    [[ -d "$dir" ]] && [[ -n "$(find "$dir" -name "$pattern" -type f -print -quit)" ]]
}

galaxy_field() {
    sed -n "s/^$1:[[:space:]]*//p" "$REPO/galaxy.yml" | head -n1
}

# A name for what one stage run leaves in tests/output: the stage's file and its venv (the
# core-X.Y stages run the file of another stage in their own venv). Stages run side by side,
# so none may remove or rewrite what another uses.
stage_key() {
    printf '%s-%s\n' "$(basename "$0" .sh)" "$(basename "${VIRTUAL_ENV:-.venv}")"
}

# ansible-test only works on a collection that sits at
# .../ansible_collections/<namespace>/<name>/ and is a git checkout. A
# checkout can live anywhere, so copy the working tree - committed, modified
# and new-but-not-ignored files alike - into such a path under tests/output
# (ignored by git), make it a one-commit repository, and print its path.
# The copy is rebuilt from scratch on every call, so it never holds stale files;
# each stage and venv (ansible-core version) has its own, so stages may run side
# by side.
collection_tree() {
    local ns name root dest
    ns="$(galaxy_field namespace)"
    name="$(galaxy_field name)"
    root="$REPO/tests/output/collection-tree/$(stage_key)"
    dest="$root/ansible_collections/$ns/$name"
    rm -rf "$root"
    mkdir -p "$dest"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard \
        | rsync -a --from0 --files-from=- --ignore-missing-args "$REPO/" "$dest/"
    git -C "$dest" init -q
    git -C "$dest" add -A
    git -C "$dest" -c user.name=test.sh -c user.email=test@backingchain.invalid \
        commit -q --no-verify --no-gpg-sign -m "snapshot of $REPO for ansible-test"
    printf '%s\n' "$dest"
}

# The rest of the stage runs with ansible-core X.Y: .venvs/ansible-core-X.Y
# (made by scripts/setup.sh from scripts/ansible-core-versions.txt) goes first
# on PATH, so python, ansible-test and ansible-playbook are that venv's.
use_ansible_core() {
    local venv="$REPO/.venvs/ansible-core-$1"
    [[ -x "$venv/bin/ansible-test" ]] || { echo "$venv is missing: run scripts/setup.sh"; exit 1; }
    export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
    echo "ansible-core $(python -c 'from ansible.release import __version__; print(__version__)') from $venv"
}

controller_python_version() {
    python -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# Python versions that ansible-test supports and tests/config.yml allows for
# modules and module_utils (run from the collection tree or the checkout).
target_python_versions() {
    python - <<'PY'
import yaml
from packaging.specifiers import SpecifierSet
from ansible_test._internal.constants import SUPPORTED_PYTHON_VERSIONS
with open('tests/config.yml') as f:
    spec = SpecifierSet(yaml.safe_load(f)['modules']['python_requires'])
print(' '.join(v for v in SUPPORTED_PYTHON_VERSIONS if v in spec))
PY
}

# ansible-test finds interpreters as pythonX.Y on PATH; pyenv's shims only
# answer for the active version. For each requested version, find a working
# interpreter (PATH, then pyenv's versions) and link it into BINDIR as
# pythonX.Y. Prints the versions found; reports the others on stderr.
expose_pythons() {
    local bindir="$1" v cand exe pyenv_root found=()
    shift
    rm -rf "$bindir"
    mkdir -p "$bindir"
    pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for v in "$@"; do
        exe=""
        for cand in "$(command -v "python$v" || true)" "$pyenv_root"/versions/"$v".*/bin/"python$v"; do
            # It must run and be able to build the venvs ansible-test needs.
            if [[ -x "$cand" ]] && "$cand" -c 'import venv, ensurepip' >/dev/null 2>&1; then
                exe="$cand"
                break
            fi
        done
        if [[ -n "$exe" ]]; then
            ln -s "$exe" "$bindir/python$v"
            found+=("$v")
        else
            echo "NOTE: no Python $v interpreter on this machine" >&2
        fi
    done
    echo "${found[*]}"
}

# Make the live checkout visible to Ansible (ansible-playbook, ansible-doc,
# ansible-lint, molecule, antsibull-docs) as <ns>.<name>: a symlink
# ansible_collections/<ns>/<name> -> $REPO under tests/output (ignored by
# git), put first on ANSIBLE_COLLECTIONS_PATH so that no installed copy of
# the collection (e.g. in ~/.ansible/collections) shadows the checkout.
use_checkout_collection() {
    local root="$REPO/tests/output/collections" link
    link="$root/ansible_collections/$(galaxy_field namespace)/$(galaxy_field name)"
    if [[ "$(readlink "$link" 2>/dev/null)" != "$REPO" ]]; then
        mkdir -p "$(dirname "$link")"
        # made beside and renamed over: a stage running beside this one never sees the link missing
        ln -sfn "$REPO" "$link.$$"
        mv -Tf "$link.$$" "$link"
    fi
    export ANSIBLE_COLLECTIONS_PATH="$root${ANSIBLE_COLLECTIONS_PATH:+:$ANSIBLE_COLLECTIONS_PATH}"
}

# Run one molecule scenario of extensions/molecule/ (the built-in default driver
# against localhost; no containers here) and end the stage with its result.
molecule_scenario() {
    [[ -f "$REPO/extensions/molecule/$1/molecule.yml" ]] || { echo "no molecule scenario $1 in extensions/molecule"; exit 1; }
    use_checkout_collection
    export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
    exec molecule test --scenario-name "$1"
}
