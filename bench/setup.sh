#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Install what only the benchmark needs (bench/apt-packages.txt): virtnbdbackup, the tool the live backup rows
# are compared with. Kept out of scripts/apt-packages-*.txt so that the test stages do not need it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
missing=()
while read -r pkg; do
    [[ -z $pkg || $pkg == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done <"$HERE/apt-packages.txt"
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "[bench setup] installing ${missing[*]}" >&2
as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo --)
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
