# backingchain.qcow2 offline get-pip stand-in (marker: do not remove this line)
"""Stand-in for the get-pip-<version>.py script that ansible-test downloads.

ansible-test bootstraps pip in each of its virtual environments by running
get-pip-<version>.py, which it downloads from a host these machines cannot
reach. It first looks in ~/.ansible/test/cache/get_pip_<version>.py, where
scripts/setup.sh puts this file. We bootstrap the pip bundled with Python
(ensurepip) and let that pip install the version ansible-test asked for from
the package index configured on the machine.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

# get-pip.py options that 'pip install' does not understand.
GET_PIP_ONLY_OPTIONS = ('--no-setuptools', '--no-wheel')


def main() -> int:
    """Bootstrap pip, then install the requested packages with it."""
    # ensurepip drops every PIP_* variable from os.environ and points
    # PIP_CONFIG_FILE at /dev/null. Keep a copy of the caller's environment
    # for the real install, so the machine's pip configuration (index, cache,
    # constraints) and ansible-test's PIP_* settings still apply.
    env = os.environ.copy()
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    return subprocess.call([sys.executable, '-m', 'pip', 'install'] + args, env=env)


if __name__ == '__main__':
    sys.exit(main())
