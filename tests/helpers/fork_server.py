"""Child Pythons forked from a server that has imported the engine once, for the crash tests' many short children.

A crash sweep runs an operation in a child once per I/O event it kills it at: well over a thousand children in
the interop stage. A fresh `python -c` spends about 0.13 s of CPU importing the engine before it does anything;
a child forked from this server starts with the engine imported, as a fresh interpreter would have it (the
server imports and does nothing else: no I/O event counted, no crash armed, no cache filled).

The child runs the snippet as `python -c` would: sys.argv is ['-c', *args], __name__ is '__main__', its working
directory and environment are the caller's, stdout and stderr are captured, an exception prints its traceback and
exits 1, SystemExit exits with its code; a child killed by a signal gives returncode -signal, like subprocess. The
crash hook (testhooks.set_crash_at) is armed from BACKINGCHAIN_QCOW2_CRASH_AT in the child's environment.
One server per test process (pytest-xdist worker), started on first use, ended when the process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import typing as t

# The modules the snippets import: imported once by the server (the harness brings ansible.module_utils.basic).
PRELOAD = (
    'ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api',
    'ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.testhooks',
    'ansible_collections.backingchain.qcow2.plugins.module_utils._backup.backup',
    'ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest',
    'ansible_collections.backingchain.qcow2.plugins.module_utils._backup.merge',
    'ansible_collections.backingchain.qcow2.plugins.module_utils._backup.recover',
    'ansible_collections.backingchain.qcow2.tests.unit.plugins.modules.harness',
)

_SERVER = r'''
import importlib, json, os, signal, sys, tempfile, traceback
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    importlib.import_module(name)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import testhooks


def child(request, out, err):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    testhooks.set_crash_at(int(os.environ.get("BACKINGCHAIN_QCOW2_CRASH_AT", "0") or 0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.argv = ["-c"] + request["args"]
    code = 0
    try:
        exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


for line in sys.stdin:
    request = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            try:
                child(request, out.fileno(), err.fileno())
            finally:
                os._exit(70)
        _pid, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.seek(0)
        err.seek(0)
        reply = {"returncode": code, "stdout": out.read().decode("utf-8", "replace"),
                 "stderr": err.read().decode("utf-8", "replace")}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
'''

_server: dict[int, subprocess.Popen] = {}  # pid of the test process -> its server (a forked test process starts its own)


def _get_server(collections_root: str) -> subprocess.Popen:
    server = _server.get(os.getpid())
    if server is None or server.poll() is not None:
        env = dict(os.environ)
        env.pop('BACKINGCHAIN_QCOW2_CRASH_AT', None)  # testhooks reads it at import: the server must not have it
        env.pop('BACKINGCHAIN_QCOW2_IO_HOLD', None)
        server = subprocess.Popen([sys.executable, '-c', _SERVER, collections_root, *PRELOAD], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _server[os.getpid()] = server
        atexit.register(_stop, server)
    return server


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.stdin.close()
        server.wait()


def run(code: str, args: t.Sequence[str], env: dict[str, str], cwd: str | os.PathLike | None,
        collections_root: str) -> subprocess.CompletedProcess:
    """Run the snippet `code` in a forked child as `python -c code *args` would run, with env as its environment."""
    server = _get_server(collections_root)
    request = {'code': code, 'args': list(args), 'env': env, 'cwd': os.fspath(cwd if cwd is not None else os.getcwd())}
    server.stdin.write(json.dumps(request) + '\n')
    server.stdin.flush()
    line = server.stdout.readline()
    if not line:
        raise RuntimeError('the fork server ended (exit %s)' % server.wait())
    reply = json.loads(line)
    return subprocess.CompletedProcess(['python', '-c', code, *args], reply['returncode'], reply['stdout'],
                                       reply['stderr'])
