#!/usr/bin/env bash
# Regenerate the reference pages in docs/reference/ from the modules', roles' and filters' own
# documentation (antsibull-docs), and the chain pictures (scripts/lib/chain_pictures.py): those of
# the guides in docs/docsite/rst/ from the descriptions beside them, docs/images/*.svg from
# docs/images/*.yml. Stage 32-changelog-docs fails when any of them is out of date.
#   scripts/gen-docs.sh            # rewrite docs/reference/
#   scripts/gen-docs.sh --check    # only compare
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${VIRTUAL_ENV:-}" ]] || "$REPO/scripts/setup.sh" >/dev/null
# shellcheck source=lib/common.sh
source "$REPO/scripts/lib/common.sh"  # activates .venv
use_checkout_collection

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
antsibull-docs collection --use-current --dest-dir "$out" backingchain.qcow2 >/dev/null
generated="$out/collections/backingchain/qcow2"
target="$REPO/docs/reference"
if [[ "${1:-}" == "--check" ]]; then
    python "$REPO/scripts/lib/chain_pictures.py" --check "$REPO"/docs/docsite/rst/*.rst "$REPO"/docs/images/*.yml
    if ! diff -r -q "$generated" "$target" >/dev/null 2>&1; then
        diff -r -u "$target" "$generated" | head -40 || true
        echo "docs/reference/ is out of date: run scripts/gen-docs.sh"
        exit 1
    fi
    echo "docs/reference/ is up to date"
else
    rm -rf "$target"
    mkdir -p "$target"
    cp -r "$generated"/. "$target"/
    echo "wrote $(find "$target" -type f | wc -l) pages to docs/reference/"
    python "$REPO/scripts/lib/chain_pictures.py" "$REPO"/docs/docsite/rst/*.rst "$REPO"/docs/images/*.yml
fi
