#!/usr/bin/env bash
# The collection's main job, end to end: set up the machine, then run
# playbooks/demo.yml with ansible-playbook when it exists, otherwise the
# engine demo (scripts/engine_demo.py). Extra arguments go to that command.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$REPO/scripts/setup.sh"

# Venv, REPO, and the checkout visible to Ansible as backingchain.qcow2.
# shellcheck source=lib/common.sh
source "$REPO/scripts/lib/common.sh"
use_checkout_collection

if [[ -f playbooks/demo.yml ]]; then
    echo "+ ansible-playbook playbooks/demo.yml $*"
    exec ansible-playbook playbooks/demo.yml "$@"
elif [[ -f scripts/engine_demo.py ]]; then
    echo "+ python scripts/engine_demo.py $*"
    exec python scripts/engine_demo.py "$@"
else
    echo "nothing to demo yet: neither playbooks/demo.yml nor scripts/engine_demo.py exists" >&2
    exit 1
fi
