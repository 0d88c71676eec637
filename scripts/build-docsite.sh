#!/usr/bin/env bash
# Build the collection's docs site: module, role and filter pages and the guides (docs/docsite/), as
# antsibull-docs sphinx-init sets it up, with Sphinx's warnings as errors, offline. Each module page
# gets pictures of what the module does to a chain (docs/docsite/module-pictures.yml) under its synopsis.
#   scripts/build-docsite.sh [DEST]    # default tests/output/docsite; the site is DEST/build/html
# Links into the Ansible documentation resolve through a local inventory (scripts/lib/ansible_docs_inventory.py)
# instead of inventories fetched at build time; the pages need nothing from the network to be viewed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n "${VIRTUAL_ENV:-}" ]] || "$REPO/scripts/setup.sh" >/dev/null
# shellcheck source=lib/common.sh
source "$REPO/scripts/lib/common.sh"  # activates .venv
use_checkout_collection

dest="$(realpath -m "${1:-$REPO/tests/output/docsite}")"
rm -rf "$dest"
mkdir -p "$dest"
chmod 0755 "$dest"  # antsibull-docs refuses a destination others may write to
antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error --dest-dir "$dest" \
    --project backingchain.qcow2 --copyright "backingchain.qcow2 contributors" --title backingchain.qcow2 \
    backingchain.qcow2 >/dev/null
cat >>"$dest/conf.py" <<'PY'

# Offline build (scripts/build-docsite.sh): no inventory is fetched; links into the Ansible docs resolve
# through ansible_devel.inv, written from the labels the pages use.
intersphinx_mapping = {'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', '../ansible_devel.inv')}
PY
# build.sh runs antsibull-docs (rst/) then sphinx-build -W; the inventory needs the RST, so run the two steps apart.
(cd "$dest" && sed -n '/^# Create collection documentation/,/^# Build Sphinx site/p' build.sh | bash)
python "$REPO/scripts/lib/chain_pictures.py" --module-pages "$dest/rst" "$REPO/docs/docsite/module-pictures.yml"
python "$REPO/scripts/lib/ansible_docs_inventory.py" "$dest/rst" "$dest/ansible_devel.inv"
(cd "$dest" && sphinx-build -M html rst build -c . -W --keep-going -q)
echo "docs site: $dest/build/html/index.html"
