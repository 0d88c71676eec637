# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Positional file I/O used by every image.

Every write, truncate and flush the engine issues goes through BlockFile, which reports each to the test
hooks (testhooks.py) first, so a crash test can stop the process at exactly the Nth of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import typing

from . import directio
from .errors import CorruptionError, NoSpaceError, Qcow2Error
from .testhooks import io_event as _io_event

IOV_MAX = 1024
GATHER_BYTES = 4 << 20  # small writes behind that follow each other on disk go out together, up to this much

MAX_OFFSET = (1 << 63) - 1
WARM_FILE_READS = 4  # after this many, a file's reads no longer ask the page cache what it holds
DIRECT_READ_MIN = 64 << 10  # smaller reads go through the page cache (a check of it would cost more than they do)


def _after(views: list[memoryview], skip: int) -> list[memoryview]:
    """views without their first skip bytes."""
    if not skip:
        return views
    rest = []
    for view in views:
        if skip >= len(view):
            skip -= len(view)
            continue
        rest.append(view[skip:])
        skip = 0
    return rest


def _check_range(path: str, offset: int, length: int) -> None:
    """Offsets come from metadata that may be hostile: refuse what no file can hold before the OS call does."""
    if offset < 0 or length < 0 or offset + length > MAX_OFFSET:
        raise CorruptionError("Offset %#x (+%d bytes) in %s lies beyond any possible file size; the metadata pointing "
                              "there is corrupt" % (offset, length, path), path)


def _raise_os_error(exc: OSError, path: str, what: str) -> typing.NoReturn:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise NoSpaceError("No space left on device while %s %s" % (what, path), path) from exc
    raise Qcow2Error("I/O error while %s %s: %s" % (what, path, exc.strerror or exc), path) from exc


class WriteRecord:
    """The byte ranges of one file that this process changed while the record was open (recording_writes()).

    With ``block``, also the sha256 of each block of that many bytes (at a multiple of it) that a write covered
    whole, taken from the write's own buffers: a caller keeping digests of a file's blocks need not read back what
    it just wrote (a commit's writes bypass the page cache). ``digests`` holds, for every block written so far, the
    digest of what was last written there, or None when a later change covered it only in part (or changed it
    without data: a truncate, an allocation, a punched hole), or when its hashing has not finished: such blocks must
    be read again. Under write_behind() the hashing runs in a worker thread beside the write, off the thread that
    prepares the next writes; a slot per block, taken as each write is issued, keeps the order of the writes.

    With ``from_copies``, nothing is hashed: the writer of a copy tells (note_copies) which block of which source
    file each block it wrote whole is a copy of, and ``copied`` keeps that until a later change of the block; a
    caller that knows the source blocks' digests takes them from there (copied_digests).
    """

    def __init__(self, identity: tuple[int, int] | None, block: int | None = None, from_copies: bool = False) -> None:
        self.identity = identity  # (st_dev, st_ino); None until new_image binds it to its temporary file
        self.ranges: list[tuple[int, int]] = []  # (offset, length), in the order written
        self.block = block
        self.from_copies = from_copies
        self.copied: dict[int, tuple[tuple[int, int], int]] = {}  # block index -> (source identity, source block)
        self._slots: dict[int, list | None] = {}  # block index -> [digest or None] of its last write, or None

    @property
    def digests(self) -> dict[int, bytes | None]:
        """Block index -> sha256 of its bytes, or None: read it again (see the class). Made anew at each call."""
        return {index: slot[0] if slot is not None else None for index, slot in self._slots.items()}

    def wrote(self, offset: int, length: int, views: typing.Sequence[memoryview] | None) -> HashJob | None:
        """Note a change; for a write with digests to take, the hashing left to do (run_hash_job) once the caller
        has issued it, before its buffers change."""
        self.ranges.append((offset, length))
        block = self.block
        if block is None:
            return None
        first, end = offset // block, -(-(offset + length) // block)
        for index in range(first, end):
            self._slots[index] = None
        if self.copied:
            for index in range(first, end):
                self.copied.pop(index, None)
        whole = range(-(-offset // block), (offset + length) // block)
        if views is None or not whole or self.from_copies:
            return None
        slots = {}
        for index in whole:
            slots[index] = self._slots[index] = [None]
        return HashJob(offset, tuple(views), block, slots)

    def copied_digests(self, source: tuple[int, int], digests: typing.Sequence[bytes | None]) -> dict[int, bytes]:
        """Block index -> digest, for the blocks written whole as copies of source's blocks whose digests are
        known (digests[i]: of source's block i, or None)."""
        out = {}
        for index, (identity, source_index) in self.copied.items():
            if identity == source and source_index < len(digests) and digests[source_index] is not None:
                out[index] = digests[source_index]
        return out


class HashJob:
    """The blocks one write covers whole, to hash from its views (written from ``offset`` on) into their slots."""

    __slots__ = ("offset", "views", "block", "slots")

    def __init__(self, offset: int, views: tuple[memoryview, ...], block: int, slots: dict[int, list]) -> None:
        self.offset = offset
        self.views = views
        self.block = block
        self.slots = slots  # block index -> the one-item list its digest goes into


def run_hash_jobs(jobs: typing.Iterable[HashJob]) -> None:
    for job in jobs:
        run_hash_job(job)


def run_hash_job(job: HashJob) -> None:
    """Fill the slots with the sha256 of the blocks the views (written from job.offset on) cover whole, straight
    from the views (hashlib lets other threads run while it hashes a large buffer)."""
    import hashlib  # only a recording with digests needs it: start-up time counts
    block, slots = job.block, job.slots
    hasher = None
    pos = job.offset
    for view in job.views:
        done, size = 0, len(view)
        while done < size:
            at = pos + done
            index = at // block
            take = min(size - done, (index + 1) * block - at)
            if index in slots:
                if at == index * block:
                    hasher = hashlib.sha256()
                hasher.update(view[done:done + take])
                if at + take == (index + 1) * block:
                    slots[index][0] = hasher.digest()
            done += take
        pos += size


_write_records: list[WriteRecord] = []


@contextlib.contextmanager
def recording_writes(path: str, block: int | None = None, from_copies: bool = False) -> typing.Iterator[WriteRecord]:
    """Record every range of path's file that a BlockFile of this process writes, truncates, allocates or punches
    while the block runs (a caller that keeps digests of a file's parts rehashes only those); with ``block``, also
    the digests of the blocks written whole, or with from_copies where they were copied from (WriteRecord)."""
    st = os.stat(path)
    with _recording(WriteRecord((st.st_dev, st.st_ino), block, from_copies)) as record:
        yield record


def copies_wanted(dest: BlockFile) -> bool:
    """Does an open recording_writes(from_copies=True) want note_copies() of writes into dest?"""
    return bool(_copy_records(dest))


def _copy_records(dest: BlockFile) -> list[WriteRecord]:
    return [record for record in _write_records
            if record.from_copies and record.block and record.identity == dest.identity()]


def note_copies(dest: BlockFile, source: BlockFile, pieces: typing.Iterable[tuple[int, int, int]]) -> None:
    """(dest offset, source offset, length): dest's bytes there now are a copy of source's. Each block of dest
    that such a piece covers whole, that the process wrote while recording and that lines up with a whole block of
    source, is noted as a copy of that block."""
    origin = source.identity()
    for record in _copy_records(dest):
        block, written, copied = record.block, record._slots, record.copied
        for dest_offset, source_offset, length in pieces:
            if (source_offset - dest_offset) % block:
                continue
            shift = (source_offset - dest_offset) // block
            for index in range(-(-dest_offset // block), (dest_offset + length) // block):
                if index in written:
                    copied[index] = (origin, index + shift)


@contextlib.contextmanager
def recording_new_image(dest: str, block: int | None = None) -> typing.Iterator[WriteRecord]:
    """recording_writes for the image that new_image() is about to write to dest (under a temporary name, from
    its creation on: every byte of it is recorded)."""
    with _recording(WriteRecord(None, block)) as record:
        _unbound[record] = os.path.abspath(dest)
        try:
            yield record
        finally:
            _unbound.pop(record, None)


def bind_new_file(dest: str, path: str) -> None:
    """path (a new, still empty file) is what dest's open recording_new_image() records from now on."""
    dest = os.path.abspath(dest)
    for record, wanted in list(_unbound.items()):
        if wanted == dest:
            st = os.stat(path)
            record.identity = (st.st_dev, st.st_ino)
            del _unbound[record]


@contextlib.contextmanager
def _recording(record: WriteRecord) -> typing.Iterator[WriteRecord]:
    _write_records.append(record)
    try:
        yield record
    finally:
        _write_records.remove(record)


_unbound: dict[WriteRecord, str] = {}  # recording_new_image records -> their destination, until bound


class BlockFile:
    """An open file with positional reads and writes."""

    def __init__(self, path: str, writable: bool = False, create: bool = False, exclusive: bool = False) -> None:
        self.path = path
        self.writable = writable or create
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            raise Qcow2Error("Could not open '%s': No such file or directory" % path, path) from None
        except IsADirectoryError:
            raise Qcow2Error("Could not open '%s': Is a directory" % path, path) from None
        except PermissionError:
            raise Qcow2Error("Could not open '%s': Permission denied" % path, path) from None
        except FileExistsError:
            raise Qcow2Error("Could not create '%s': File exists" % path, path) from None
        except OSError as exc:
            _raise_os_error(exc, path, "opening")
        mode = os.fstat(self.fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode) or stat.S_ISCHR(mode)):
            os.close(self.fd)  # qemu's file driver opens regular files and devices only: not directories, fifos...
            raise Qcow2Error("Could not open '%s': 'file' driver requires '%s' to be a regular file" % (path, path),
                             path)
        self.data_written = False
        self.written_end = 0  # one past the highest byte written through this object
        self._executor = None  # set inside write_behind()
        self._pending = []  # (future, start, end, buffer tags) of writes still running
        self.buffer_tag = None  # which caller buffer the writes being issued come from
        self._max_pending = 8
        self._writeback = None  # an EarlyWriteback inside early_writeback()
        self._gather = None  # [start, end, views, buffer tags] of contiguous writes behind not yet issued
        self._direct_fd = None  # an O_DIRECT descriptor inside direct_writes()
        self._direct_refused = None  # the same, once the filesystem refused a direct write (closed at the end)
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino), once a write record asks
        self._direct_read_fd: int | None = None  # an O_DIRECT descriptor, opened at the first large read
        self._direct_read_refused = False  # the filesystem or platform cannot read directly
        self._cached_reads = 0  # large reads in a row that the page cache held whole

    def _note(self, offset: int, length: int, views: typing.Sequence[memoryview] | None = None) -> list[HashJob]:
        """Tell the open write records (rarely any) that [offset, offset+length) of this file changes (to the bytes
        in views, when it is a write); the hashing they ask for, to run once the write is issued."""
        jobs = []
        if _write_records and length > 0:
            identity = self.identity()
            for record in _write_records:
                if record.identity == identity:
                    job = record.wrote(offset, length, views)
                    if job is not None:
                        jobs.append(job)
        return jobs

    def identity(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the file (an open descriptor's file never changes: one fstat, not one per write)."""
        if self._identity is None:
            st = os.fstat(self.fd)
            self._identity = (st.st_dev, st.st_ino)
        return self._identity

    # ---- reads ----
    def pread(self, length: int, offset: int) -> bytes:
        """Read up to length bytes; shorter only at end of file."""
        _check_range(self.path, offset, length)
        if self._pending or self._gather:
            self._wait_overlapping(offset, offset + length)
        try:
            data = os.pread(self.fd, length, offset)
            if len(data) == length or not data:
                return data
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self.fd, length - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            return b"".join(parts)
        except OSError as exc:
            _raise_os_error(exc, self.path, "reading")

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill the writable memoryview from offset; bytes past end of file read as zeros."""
        self.read_views_into([view], offset)

    def read_views_into(self, views: list[memoryview], offset: int) -> None:
        """Fill the views, in order, from consecutive bytes of the file starting at offset (one request where the
        kernel takes them all); bytes past end of file read as zeros. A large read of data the page cache does not
        hold goes around it (directio.py)."""
        total = sum(len(v) for v in views)
        _check_range(self.path, offset, total)
        if self._pending or self._gather:
            self._wait_overlapping(offset, offset + total)
        try:
            done = self._read_direct(views, offset, total) if total >= DIRECT_READ_MIN else 0
            if done < total:
                self._read_buffered(_after(views, done), offset + done)
        except OSError as exc:
            _raise_os_error(exc, self.path, "reading")

    def _read_direct(self, views: list[memoryview], offset: int, total: int) -> int:
        """Bytes read from the start of views around the page cache: 0 when the read does not qualify, or the page
        cache holds some of it; fewer than total at end of file."""
        if self._direct_read_refused or self._cached_reads >= WARM_FILE_READS or not directio.qualifies(views, offset):
            return 0
        cached = directio.cached_pages(self.fd, offset, total)
        if cached is None or cached[0]:
            # a file whose reads the page cache serves whole, again and again, is one a guest or a tool just wrote:
            # it is not asked again (a commit of 336 scattered clusters spent 7 ms asking)
            self._cached_reads = self._cached_reads + 1 if cached is not None and cached[0] == cached[1] else 0
            return 0
        self._cached_reads = 0
        if self._direct_read_fd is None:
            self._direct_read_fd = directio.open_direct_read(self.path, self.identity())
            if self._direct_read_fd is None:
                self._direct_read_refused = True
                return 0
        try:
            n = os.preadv(self._direct_read_fd, views[:IOV_MAX], offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._direct_read_refused = True  # the filesystem turned the alignment down after all
            os.close(self._direct_read_fd)
            self._direct_read_fd = None
            return 0
        return max(n, 0)

    def _read_buffered(self, views: list[memoryview], offset: int) -> None:
        n = os.preadv(self.fd, views[:IOV_MAX], offset)
        for view in views:  # what one request did not fill (short read, end of file, more than IOV_MAX views)
            if n >= len(view):
                n -= len(view)
            else:
                done = n
                n = 0
                while done < len(view):
                    got = os.preadv(self.fd, [view[done:]], offset + done)
                    if got <= 0:
                        view[done:] = bytes(len(view) - done)
                        break
                    done += got
            offset += len(view)

    # ---- writes ----
    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self.pwritev([data], offset)

    def pwritev(self, buffers: typing.Sequence[bytes | bytearray | memoryview], offset: int) -> None:
        """Write a list of buffers contiguously at offset (one syscall per IOV_MAX buffers).

        Under write_behind() the write runs in a worker thread (small ones that follow each other on disk
        gathered into one) and the buffers must not change until drain() or wait_for_buffer().
        """
        views = [memoryview(b) for b in buffers if len(b)]
        total = sum(v.nbytes for v in views)
        _check_range(self.path, offset, total)
        _io_event()
        jobs = self._note(offset, total, views)
        self.written_end = max(self.written_end, offset + total)
        self.data_written = True
        if self._writeback is not None:
            self._writeback.issued(offset, offset + total)
        if self._executor is None:
            self._write_views(views, offset)
            run_hash_jobs(jobs)
            return
        end = offset + total
        gather = self._gather
        if gather is not None and gather[1] == offset and gather[1] - gather[0] + total <= GATHER_BYTES:
            gather[1] = end
            gather[2].extend(views)
            gather[3].add(self.buffer_tag)
            gather[4].extend(jobs)
            return
        self._issue_gathered()
        self._wait_overlapping(offset, end)  # overlapping writes must land in the order they were issued
        if total < GATHER_BYTES:
            self._gather = [offset, end, views, {self.buffer_tag}, jobs]
        else:
            self._submit(views, offset, end, {self.buffer_tag}, jobs)

    def _issue_gathered(self) -> None:
        gather, self._gather = self._gather, None
        if gather is not None:
            self._submit(gather[2], gather[0], gather[1], gather[3], gather[4])

    def _submit(self, views: list[memoryview], start: int, end: int, tags: set[int | None], jobs: list[HashJob]) -> None:
        """Run the write in a worker, and the hashing the write records asked for in another (both only read the
        buffers, which stay untouched until both are done: they count as writes from those buffers)."""
        self._run_behind(self._write_views, (views, start), start, end, tags)
        if jobs:
            self._run_behind(run_hash_jobs, (jobs,), start, end, tags)

    def _run_behind(self, work: typing.Callable, args: tuple, start: int, end: int, tags: set[int | None]) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0)[0].result()
        self._pending.append((self._executor.submit(work, *args), start, end, tags))

    def _write_views(self, views: list[memoryview], offset: int) -> None:
        fd = self._direct_fd
        if fd is not None and directio.qualifies(views, offset):
            try:
                self._write_views_to(fd, views, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    _raise_os_error(exc, self.path, "writing")
                # the filesystem turned the alignment down after all: the page cache it is, from now on
                self._direct_fd = None
                self._direct_refused = fd
        try:
            self._write_views_to(self.fd, views, offset)
        except OSError as exc:
            _raise_os_error(exc, self.path, "writing")

    def _write_views_to(self, fd: int, views: list[memoryview], offset: int) -> None:
        """pwritev all of views at offset through fd, retrying short writes."""
        pos = 0
        while views:
            batch = views[:IOV_MAX]
            expected = sum(len(v) for v in batch)
            n = os.pwritev(fd, batch, offset + pos)
            pos += n
            if n == expected:
                views = views[IOV_MAX:]
                continue
            views = _after(views, n)  # short write: retry the rest

    @contextlib.contextmanager
    def write_behind(self, workers: int = 8, max_pending: int = 24) -> typing.Iterator[None]:
        """Let data writes run in worker threads while the caller prepares the next ones (qemu writes from a
        thread pool too). Every read, flush, resize and the end of the block wait for them first.

        Eight workers: a commit of scattered clusters writes many single clusters in place, each a direct write
        that waits for the disk, so the disk sees as many at once as there are threads (merging 256 MiB in 4096
        scattered clusters into its full: about 1000 such writes of 64 KiB; its writes ran for 445-615 ms with two
        workers, 347-507 ms with four, 301-381 ms with eight, 357-509 ms with sixteen)."""
        if self._executor is not None:
            yield
            return
        from concurrent.futures import ThreadPoolExecutor  # only writers need threads: start-up time counts
        self._executor = ThreadPoolExecutor(max_workers=workers)
        self._max_pending = max_pending
        try:
            yield
            self.drain()
        finally:
            try:
                self.drain()
            except Qcow2Error:
                pass  # the first error was raised above
            self._executor.shutdown(wait=True)
            self._executor = None

    @contextlib.contextmanager
    def direct_writes(self) -> typing.Iterator[None]:
        """Let aligned data writes bypass the page cache (see directio.py); others, and every read, still use
        it (Linux keeps the two coherent). flush() still makes the direct writes durable."""
        if self._direct_fd is not None or not self.writable:
            yield
            return
        self._direct_fd = directio.open_direct(self.path)
        try:
            yield
        finally:
            try:
                self.drain()  # never close the descriptor under a running write
            finally:
                for fd in {self._direct_fd, self._direct_refused} - {None}:
                    os.close(fd)
                self._direct_fd = self._direct_refused = None

    @contextlib.contextmanager
    def early_writeback(self, every: int = 32 << 20) -> typing.Iterator[None]:
        """For a copy whose result is flushed whole at the end: have the kernel start writing back what was
        written every so many bytes, so the disk works while the copy goes on and the final flush finds
        little left (qemu gets the same from its parallel requests)."""
        if self._writeback is not None or not hasattr(os, "posix_fadvise"):
            yield
            return
        self._writeback = EarlyWriteback(self.fd, every)
        try:
            yield
        finally:
            writeback, self._writeback = self._writeback, None
            writeback.close()

    @contextlib.contextmanager
    def copy_buffers(self, count: int, size: int) -> typing.Iterator[BufferRing]:
        """For a copy into this file: its writes go behind (direct where aligned, written back early), from
        ``count`` aligned buffers of ``size`` bytes the caller fills in turn (BufferRing.take)."""
        with self.write_behind(), self.early_writeback(), self.direct_writes():
            ring = BufferRing(self, count, size)
            try:
                yield ring
            finally:
                self.buffer_tag = None

    def wait_for_buffer(self, tag: int) -> None:
        """Wait for the writes issued while buffer_tag was ``tag``, so that buffer can be refilled."""
        self._finish_writes(lambda start, end, tags: tag in tags)

    def _wait_overlapping(self, start: int, end: int) -> None:
        """Finish the writes behind that [start, end) overlaps (the others may go on running)."""
        self._finish_writes(lambda s, e, tags: s < end and start < e)

    def _finish_writes(self, matches: typing.Callable[[int, int, set], bool]) -> None:
        """Issue the gathered writes and wait for the running ones for which matches(start, end, tags) holds."""
        gather = self._gather
        if gather is not None and matches(gather[0], gather[1], gather[3]):
            self._issue_gathered()
        still = []
        for item in self._pending:
            if matches(item[1], item[2], item[3]):
                item[0].result()
            else:
                still.append(item)
        self._pending = still

    def drain(self) -> None:
        """Wait for every write still running in write_behind(); raise the first failure."""
        if self._gather is not None:
            self._issue_gathered()
        pending, self._pending = self._pending, []
        error = None
        for future, _start, _end, _tag in pending:
            try:
                future.result()
            except Qcow2Error as exc:
                error = error or exc
        if error is not None:
            raise error

    def truncate(self, length: int) -> None:
        self.drain()
        _io_event()
        if _write_records:
            old = self.size()
            self._note(min(old, length), abs(length - old))
        try:
            os.ftruncate(self.fd, length)
        except OSError as exc:
            _raise_os_error(exc, self.path, "resizing")

    def fallocate(self, offset: int, length: int) -> None:
        """Reserve blocks (preallocation=falloc); falls back to writing zeros where unsupported."""
        self.drain()
        _io_event()
        self._note(offset, length)
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self.write_zeros(offset, length)
            else:
                _raise_os_error(exc, self.path, "allocating")

    def reserve(self, offset: int, length: int) -> None:
        """Give the file blocks for [offset, offset+length) ahead of writes (fallocate; ftruncate where the
        filesystem cannot): writes into reserved blocks are several times faster than writes that grow the file."""
        self.drain()
        _io_event()
        self._note(offset, length)
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                _raise_os_error(exc, self.path, "allocating space for")
            if self.size() < offset + length:
                os.ftruncate(self.fd, offset + length)

    def punch_hole(self, offset: int, length: int) -> bool:
        """Deallocate [offset, offset+length) keeping the file size (reads return zeros); False if unsupported."""
        self.drain()
        fallocate = _libc_fallocate()
        if fallocate is None:
            return False
        _io_event()
        self._note(offset, length)
        if fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            return False
        self.data_written = True
        return True

    def write_zeros(self, offset: int, length: int) -> None:
        chunk = bytes(min(length, 4 << 20))
        while length > 0:
            n = min(length, len(chunk))
            self.pwrite(chunk[:n] if n < len(chunk) else chunk, offset)
            offset += n
            length -= n

    def copy_from(self, src: BlockFile, src_offset: int, dst_offset: int, length: int, buffer: bytearray | None = None) -> None:
        """Copy bytes from another BlockFile without going through Python where the kernel can."""
        self.drain()
        src.drain()
        _io_event()
        self._note(dst_offset, length)
        self.written_end = max(self.written_end, dst_offset + length)
        try:
            while length > 0:
                n = 0
                if _copy_file_range_ok:
                    try:
                        n = os.copy_file_range(src.fd, self.fd, length, src_offset, dst_offset)
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
                            raise
                        _disable_copy_file_range()
                        n = 0
                if n <= 0:
                    # past the source's end of file or no kernel copy: go through a buffer
                    step = min(length, 4 << 20)
                    data = src.pread(step, src_offset)
                    if len(data) < step:
                        data += bytes(step - len(data))
                    os.pwrite(self.fd, data, dst_offset)
                    n = step
                src_offset += n
                dst_offset += n
                length -= n
        except OSError as exc:
            _raise_os_error(exc, self.path, "copying into")
        self.data_written = True

    def flush(self) -> None:
        self.drain()
        _io_event()
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            _raise_os_error(exc, self.path, "flushing")
        self.data_written = False

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                try:
                    self.drain()  # never close the descriptor under a running write
                except Qcow2Error:
                    pass  # closing after a failure that was already raised
                os.close(self.fd)
                if self._direct_read_fd is not None:
                    os.close(self._direct_read_fd)
            finally:
                self.fd = -1
                self._direct_read_fd = None


_copy_file_range_ok = hasattr(os, "copy_file_range")


class BufferRing:
    """Aligned buffers a copy fills in turn while the writes from the others run behind.

    Reusing a few buffers spares the page faults of fresh memory; small pieces share a buffer, so their
    writes can go out together. A buffer is handed out again only once the writes from it have finished. Each is
    made when first needed (making one zeroes it): a copy of a few clusters pays for one small buffer only.
    """

    def __init__(self, file: BlockFile, count: int, size: int) -> None:
        self._file = file
        self._buffers: list[bytearray | None] = [None] * count
        self.size = size
        self._turn = 0
        self._used = 0
        self.before_switch: typing.Callable[[], None] | None = None  # run before the next buffer is handed out
        file.buffer_tag = 0

    def take(self, length: int) -> tuple[bytearray, int]:
        """(buffer, first): ``length`` bytes of a buffer from index ``first`` on, free to fill and write from."""
        if self._used + length > self.size:
            if self.before_switch is not None:
                self.before_switch()
            self._turn, self._used = (self._turn + 1) % len(self._buffers), 0
            self._file.wait_for_buffer(self._turn)
            self._file.buffer_tag = self._turn
        buf = self._buffers[self._turn]
        if buf is None:
            buf = self._buffers[self._turn] = directio.aligned_bytearray(self.size)
        first = self._used
        self._used += length
        return buf, first


class EarlyWriteback:
    """Starts the writeback of written ranges a batch behind the writes, in a thread of its own.

    The batch before the last is handed over because its writes have (almost surely) finished by then; a range
    still being written is simply left for the final flush. Nothing depends on the hints, so a refusal is ignored.
    """

    def __init__(self, fd: int, every: int) -> None:
        self.fd = fd
        self.every = every
        self._batch_start, self._batch_end, self._batch_bytes = None, 0, 0
        self._previous = None
        from concurrent.futures import ThreadPoolExecutor  # as in write_behind
        self._executor = ThreadPoolExecutor(max_workers=1)

    def issued(self, start: int, end: int) -> None:
        self._batch_start = start if self._batch_start is None else min(self._batch_start, start)
        self._batch_end = max(self._batch_end, end)
        self._batch_bytes += end - start
        if self._batch_bytes < self.every:
            return
        batch = (self._batch_start, self._batch_end)
        self._batch_start, self._batch_end, self._batch_bytes = None, 0, 0
        previous, self._previous = self._previous, batch
        if previous is not None:
            self._executor.submit(_start_writeback, self.fd, *previous)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _start_writeback(fd: int, start: int, end: int) -> None:
    # POSIX_FADV_DONTNEED makes Linux start writing the range's dirty pages back without waiting for them
    # (and drop those already clean)
    try:
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = []


def _libc_fallocate() -> typing.Callable[[int, int, int, int], int] | None:
    """libc's fallocate(2) through ctypes (the stdlib only has posix_fallocate), or None."""
    if not _fallocate:
        try:
            import ctypes
            import ctypes.util
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            func = libc.fallocate
            func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            func.restype = ctypes.c_int
            _fallocate.append(func)
        except (OSError, AttributeError):
            _fallocate.append(None)
    return _fallocate[0]


def _disable_copy_file_range() -> None:
    global _copy_file_range_ok
    _copy_file_range_ok = False
