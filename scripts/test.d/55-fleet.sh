#!/usr/bin/env bash
# The workflow playbooks across a fleet of three hosts reached over real SSH (sshd on 127.0.0.2-4),
# each with its own image directory, the engine shipped by Ansible to each host.
# test.sh: about 290 s
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

has_files tests/fleet 'test_*.py' || skip "no test_*.py under tests/fleet"
[[ -x /usr/sbin/sshd ]] || { echo "sshd missing: run scripts/setup.sh"; exit 1; }

exec python -m pytest tests/fleet
