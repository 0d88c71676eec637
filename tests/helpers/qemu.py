"""Run qemu-img and qemu-io, the reference implementation the engine is checked against.

Every helper raises QemuError (with the command, exit status and stderr) when
the tool fails, so a test never mistakes a qemu error for a result. The tools
come from Debian's qemu-utils, which scripts/setup.sh installs; a missing tool
is an error, not a reason to skip.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

StrPath = t.Union[str, 'os.PathLike[str]']

# qemu-img check exit statuses (qemu-img.c, img_check).
CHECK_OK = 0
CHECK_NOT_COMPLETED = 1
CHECK_CORRUPTIONS = 2
CHECK_LEAKS = 3
CHECK_NOT_SUPPORTED = 63


class QemuError(RuntimeError):
    """A qemu-img or qemu-io command failed."""

    def __init__(self, cmd: t.Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f'{" ".join(self.cmd)} exited {returncode}: {stderr.strip() or stdout.strip()}')


class CheckResult(t.NamedTuple):
    """Outcome of 'qemu-img check --output=json'."""

    returncode: int
    report: dict

    @property
    def clean(self) -> bool:
        """True when qemu-img found neither corruptions nor leaks."""
        return (self.returncode == CHECK_OK
                and not self.report.get('corruptions') and not self.report.get('leaks')
                and not self.report.get('check-errors'))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise QemuError([name], 127, '', f'{name} not found: install qemu-utils (scripts/setup.sh does)')
    return path


def _run(cmd: t.Sequence[str], cwd: StrPath | None, ok: t.Container[int] = (0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        raise QemuError(proc.args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def qemu_img(*args: StrPath, cwd: StrPath | None = None, ok_codes: t.Container[int] = (0,)) -> str:
    """Run 'qemu-img ARGS...' and return its stdout; other exit statuses than ok_codes raise QemuError."""
    return _run([_tool('qemu-img'), *args], cwd, ok=ok_codes).stdout


def qemu_img_json(subcommand: str, *args: StrPath, cwd: StrPath | None = None) -> t.Any:
    """Run 'qemu-img SUBCOMMAND --output=json ARGS...' and return the parsed output."""
    return json.loads(qemu_img(subcommand, '--output=json', *args, cwd=cwd))


def qemu_img_info(path: StrPath, backing_chain: bool = False, fmt: str | None = None) -> t.Any:
    """Parsed 'qemu-img info' of an image; a list of dicts, top first, with backing_chain."""
    args: list[StrPath] = ['-U']  # read-only shared open: works while another process holds the image
    if fmt:
        args += ['-f', fmt]
    if backing_chain:
        args.append('--backing-chain')
    return qemu_img_json('info', *args, path)


def qemu_img_create(path: StrPath, size: str | int | None = None, fmt: str = 'qcow2',
                    backing: StrPath | None = None, backing_fmt: str | None = 'qcow2',
                    options: dict[str, t.Any] | None = None, cwd: StrPath | None = None) -> Path:
    """Create an image with 'qemu-img create'; size may be omitted for an overlay."""
    args: list[StrPath] = ['create', '-q', '-f', fmt]
    if backing is not None:
        args += ['-b', backing]
        if backing_fmt:
            args += ['-F', backing_fmt]
    if options:
        args += ['-o', ','.join(f'{k}={v}' for k, v in options.items())]
    args.append(path)
    if size is not None:
        args.append(str(size))
    qemu_img(*args, cwd=cwd)
    return Path(path)


def qemu_io(path: StrPath, *cmds: str, fmt: str = 'qcow2', cwd: StrPath | None = None,
            options: t.Sequence[str] = ()) -> str:
    """Run each qemu-io command (e.g. 'write -P 0xab 0 64k') on the image; return stdout.

    qemu-io exits non-zero when a command fails, including a 'read -P'
    pattern mismatch, so that raises QemuError. options go before the
    image (e.g. ['-t', 'writeback'], ['-r', '-U']).
    """
    args: list[StrPath] = [_tool('qemu-io'), '-f', fmt, *options]
    for cmd in cmds:
        args += ['-c', cmd]
    args.append(path)
    return _run(args, cwd).stdout


def qemu_io_script(path: StrPath, cmds: t.Iterable[str], fmt: str = 'qcow2',
                   options: t.Sequence[str] = ('-t', 'writeback')) -> str:
    """Feed many qemu-io commands on stdin (no argv limit); every command must succeed.

    qemu-io keeps going after a failed command in this mode, so failures are
    found in its output. The default cache mode is writeback: qemu-io
    otherwise flushes after every write.
    """
    script = ''.join(cmd + '\n' for cmd in cmds) + 'quit\n'
    args = [_tool('qemu-io'), '-f', fmt, *options, str(path)]
    proc = subprocess.run(args, input=script, capture_output=True, text=True, check=False)
    failed = [line for line in (proc.stdout + proc.stderr).splitlines()
              if 'failed' in line or 'error' in line.lower() or "can't open" in line]
    if proc.returncode != 0 or failed:
        raise QemuError(args, proc.returncode, proc.stdout, proc.stderr or '\n'.join(failed))
    return proc.stdout


def qemu_img_check(path: StrPath, fmt: str = 'qcow2', incomplete_ok: bool = False) -> CheckResult:
    """Run 'qemu-img check --output=json' and return its exit status and parsed report.

    Corruptions (2) and leaks (3) are results, not errors; an image qemu
    could not check at all (1) raises QemuError, unless incomplete_ok: then
    the report is {'stderr': ...} (qemu prints no JSON in that case).
    """
    ok = (CHECK_OK, CHECK_CORRUPTIONS, CHECK_LEAKS) + ((CHECK_NOT_COMPLETED,) if incomplete_ok else ())
    proc = _run([_tool('qemu-img'), 'check', '--output=json', '-f', fmt, path], None, ok=ok)
    if proc.returncode == CHECK_NOT_COMPLETED:
        return CheckResult(proc.returncode, {'stderr': proc.stderr})
    return CheckResult(proc.returncode, json.loads(proc.stdout))


def qemu_compare(a: StrPath, b: StrPath, fmt_a: str | None = None, fmt_b: str | None = None,
                 strict: bool = False) -> bool:
    """True when both images show the same guest-visible content ('qemu-img compare').

    Without strict, a size difference counts as equal when the extra area
    reads as zeros; strict also requires equal sizes and allocation.
    """
    args: list[StrPath] = [_tool('qemu-img'), 'compare', '-q']
    if fmt_a:
        args += ['-f', fmt_a]
    if fmt_b:
        args += ['-F', fmt_b]
    if strict:
        args.append('-s')
    args += [a, b]
    return _run(args, None, ok=(0, 1)).returncode == 0


def raw_of(path: StrPath, dest_dir: StrPath | None = None, fmt: str | None = None) -> Path:
    """Flatten an image (with its whole backing chain) to a new raw file and return its path.

    The file is created in dest_dir, by default the image's own directory
    (normally a test's temporary directory).
    """
    src = Path(path)
    fd, out = tempfile.mkstemp(prefix=f'{src.name}.', suffix='.raw', dir=dest_dir or src.parent)
    os.close(fd)
    args: list[StrPath] = ['convert', '-O', 'raw']
    if fmt:
        args += ['-f', fmt]
    qemu_img(*args, src, out)
    return Path(out)


def qemu_img_map(path: StrPath, fmt: str | None = None) -> list[dict]:
    """Parsed 'qemu-img map --output=json' of an image (its whole chain)."""
    args: list[StrPath] = ['-U']
    if fmt:
        args += ['-f', fmt]
    return qemu_img_json('map', *args, path)


def backing_chain(path: StrPath) -> list[tuple[str, str]]:
    """(filename, format) of every image of the chain, top first, as 'qemu-img info --backing-chain' sees it."""
    return [(entry['filename'], entry['format']) for entry in qemu_img_info(path, backing_chain=True)]


@contextlib.contextmanager
def qemu_io_holding(path: StrPath, fmt: str = 'qcow2', read_only: bool = False,
                    cwd: StrPath | None = None, options: t.Sequence[str] = ()) -> t.Iterator[subprocess.Popen]:
    """Keep the image open in a background qemu-io, with the locks a running VM takes, until the block ends.

    read_only holds it as a VM holds a backing file (reads, lets nobody write
    it); otherwise as a VM holds its active image. options go to qemu-io
    (e.g. ['-t', 'writeback'] when the test sends writes through stdin).
    """
    args: list[StrPath] = [_tool('qemu-io'), '-f', fmt, *options]
    if read_only:
        args.append('-r')
    args.append(path)
    proc = subprocess.Popen([str(a) for a in args], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write('read 0 512\n')  # answered only once the image (and its locks) are open
        proc.stdin.flush()
        line = proc.stdout.readline()
        if 'read 512/512 bytes' not in line:
            # the whole message (qemu's error, then its hint on the next line), once the process has ended
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise QemuError(proc.args, proc.returncode, '', line + proc.stdout.read())
        yield proc
    finally:
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write('quit\n')
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


def qemu_io_send(proc: subprocess.Popen, command: str, answer: str) -> None:
    """Send one command to a qemu_io_holding() session and wait for the output line that contains answer.

    One command at a time: qemu-io reads its commands with stdio, so lines sent together wait in its
    buffer until more input arrives.
    """
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + '\n')
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise QemuError(proc.args, proc.poll() or 0, '', 'qemu-io ended before answering %r' % command)
        if answer in line:
            return


def dirty_ranges(path: StrPath, bitmap: str) -> list[tuple[int, int]]:
    """(start, length) of the ranges a persistent dirty bitmap marks, as qemu reads it (qemu-nbd -B, map).

    qemu-nbd exports the bitmap as the qemu:dirty-bitmap:NAME metadata
    context; 'qemu-img map' over that context reports dirty ranges as
    holes (data: false).
    """
    sock_dir = tempfile.mkdtemp(prefix='nbd-')
    sock = os.path.join(sock_dir, 's')
    proc = subprocess.Popen([_tool('qemu-nbd'), '-r', '-t', '-f', 'qcow2', '-B', bitmap, '-k', sock, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise QemuError(proc.args, proc.returncode, '', proc.stderr.read() if proc.stderr else '')
            if os.path.exists(sock):
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(sock)
                    break
            if time.monotonic() > deadline:
                raise QemuError(proc.args, -1, '', 'qemu-nbd did not start listening')
            time.sleep(0.02)
        opts = f'driver=nbd,server.type=unix,server.path={sock},x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}'
        try:
            extents = qemu_img_json('map', '--image-opts', opts)
        except QemuError as exc:
            # qemu-nbd may bind its socket before it refuses the bitmap: report its own error, not the refused connection
            try:
                code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                raise exc from None
            if code:
                raise QemuError(proc.args, code, '', proc.stderr.read() if proc.stderr else '') from None
            raise
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)
    out: list[tuple[int, int]] = []
    for ext in extents:
        if ext['data']:
            continue
        if out and out[-1][0] + out[-1][1] == ext['start']:
            out[-1] = (out[-1][0], out[-1][1] + ext['length'])
        else:
            out.append((ext['start'], ext['length']))
    return out


@functools.lru_cache(maxsize=None)
def qemu_supports(**create_options: str) -> bool:
    """True if this qemu-img can create a qcow2 image with these -o options (e.g. compression_type='zstd')."""
    with tempfile.TemporaryDirectory() as d:
        try:
            qemu_img_create(Path(d, 'probe.qcow2'), '1M', options=create_options)
        except QemuError:
            return False
    return True
