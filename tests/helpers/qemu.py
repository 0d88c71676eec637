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


@contextlib.contextmanager
def qemu_io_session(path: StrPath, *options: str, fmt: str = 'qcow2') -> t.Iterator[subprocess.Popen]:
    """A qemu-io process that keeps the image open (and locked) until the block ends.

    Raises QemuError if qemu-io cannot open the image (e.g. a lock conflict).
    """
    args = [_tool('qemu-io'), '-f', fmt, *options, str(path)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write('read 0 512\n')  # answered only once the image is open
        proc.stdin.flush()
        line = proc.stdout.readline()
        if 'bytes at offset 0' not in line:
            proc.wait(timeout=30)
            raise QemuError(args, proc.returncode or -1, line, proc.stderr.read() if proc.stderr else '')
        yield proc
    finally:
        if proc.poll() is None:
            try:
                proc.communicate('quit\n', timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def qemu_img_map(path: StrPath, fmt: str = 'qcow2') -> list:
    """'qemu-img map --output=json' of an image (read-only, shared)."""
    return qemu_img_json('map', '-U', '-f', fmt, path)


@functools.lru_cache(maxsize=None)
def qemu_supports(**create_options: str) -> bool:
    """True if this qemu-img can create a qcow2 image with these -o options (e.g. compression_type='zstd')."""
    with tempfile.TemporaryDirectory() as d:
        try:
            qemu_img_create(Path(d, 'probe.qcow2'), '1M', options=create_options)
        except QemuError:
            return False
    return True


def dirty_bitmap_extents(path: StrPath, bitmap: str) -> list:
    """(start, length) of the ranges a persistent dirty bitmap marks dirty, as qemu itself reads it.

    qemu-nbd exports the image with the bitmap (-B), and 'qemu-img map' over
    NBD with x-dirty-bitmap reports dirty areas as "data": false. qemu-nbd
    refuses inconsistent (in-use) bitmaps; that raises QemuError.
    """
    sockdir = tempfile.mkdtemp(prefix='qemu-nbd-')  # short path: unix sockets are limited to 108 bytes
    sock = os.path.join(sockdir, 'sock')
    args = [_tool('qemu-nbd'), '-r', '-f', 'qcow2', '-B', bitmap, '-k', sock, str(path)]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if server.poll() is not None:
                raise QemuError(args, server.returncode, server.stdout.read(), server.stderr.read())
            if time.monotonic() > deadline:
                raise QemuError(args, -1, '', 'qemu-nbd did not create its socket')
            time.sleep(0.02)
        while True:
            try:
                extents = qemu_img_json('map', '--image-opts', 'driver=nbd,server.type=unix,server.path=%s,'
                                        'x-dirty-bitmap=qemu:dirty-bitmap:%s' % (sock, bitmap))
                break
            except QemuError:
                try:  # qemu-nbd creates the socket before it is ready, or before it gives up on the bitmap
                    server.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
                    continue
                raise QemuError(args, server.returncode, server.stdout.read(), server.stderr.read()) from None
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(sockdir, ignore_errors=True)
    return [(e['start'], e['length']) for e in extents if not e['data']]
