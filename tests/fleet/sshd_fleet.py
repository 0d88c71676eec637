# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fleet of test hosts on this machine: one sshd listening on 127.0.0.2, .3, .4 (port 2222), each
"host" with its own image directory, reached by Ansible over real SSH with a throw-away key."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

HOSTS = {"host1": "127.0.0.2", "host2": "127.0.0.3", "host3": "127.0.0.4"}
PORT = 2222


def _wait_for_port(address, port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("sshd did not start listening on %s:%d" % (address, port))


class Fleet:
    def __init__(self, root, python):
        self.root = root
        self.python = python
        self.keys = os.path.join(root, "ssh")
        self.pidfile = os.path.join(self.keys, "sshd.pid")
        self.inventory = os.path.join(root, "inventory.ini")

    def image_dir(self, host):
        return os.path.join(self.root, host, "images")

    def start(self):
        os.makedirs(self.keys, exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        for name in ("ssh_host_ed25519_key", "id_ed25519"):
            key = os.path.join(self.keys, name)
            if not os.path.exists(key):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        shutil.copy(os.path.join(self.keys, "id_ed25519.pub"), os.path.join(self.keys, "authorized_keys"))
        config = os.path.join(self.keys, "sshd_config")
        with open(config, "w") as f:
            f.write("Port %d\n" % PORT)
            for address in HOSTS.values():
                f.write("ListenAddress %s\n" % address)
            f.write("HostKey %s/ssh_host_ed25519_key\nPidFile %s\nAuthorizedKeysFile %s/authorized_keys\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "UsePAM no\nStrictModes no\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
                    % (self.keys, self.pidfile, self.keys))
        subprocess.run(["/usr/sbin/sshd", "-f", config], check=True)
        for address in HOSTS.values():
            _wait_for_port(address, PORT)
        for host in HOSTS:
            os.makedirs(self.image_dir(host), exist_ok=True)
        with open(self.inventory, "w") as f:
            f.write("[fleet]\n")
            for host, address in HOSTS.items():
                f.write("%s ansible_host=%s image_dir=%s\n" % (host, address, self.image_dir(host)))
            f.write("\n[fleet:vars]\nansible_port=%d\nansible_user=root\nansible_ssh_private_key_file=%s/id_ed25519\n"
                    "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n"
                    "ansible_python_interpreter=%s\n" % (PORT, self.keys, self.python))

    def sessions_cpu_seconds(self):
        """CPU seconds of the sessions sshd has ended so far (everything the hosts ran, modules included): sshd
        runs detached, so the stage's own CPU figure does not count them."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            return None
        # After "pid (comm)": state is field 3 of stat(5), so cutime (16) and cstime (17) are at 13 and 14 here.
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _attempt in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
