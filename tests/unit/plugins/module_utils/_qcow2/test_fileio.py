"""Positional file I/O: writes behind in worker threads, small contiguous ones gathered, early writeback hints."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import directio, fileio
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.fileio import BlockFile


@pytest.fixture
def block(tmp_path):
    f = BlockFile(str(tmp_path / "f"), create=True)
    yield f
    f.close()


@pytest.fixture
def syscalls(monkeypatch):
    """Every pwritev the file issues, as (offset, total bytes)."""
    calls = []
    real = os.pwritev

    def recording(fd, buffers, offset):
        calls.append((offset, sum(len(b) for b in buffers)))
        return real(fd, buffers, offset)

    monkeypatch.setattr(fileio.os, "pwritev", recording)
    return calls


def test_contiguous_small_writes_behind_go_out_as_one(block, syscalls):
    with block.write_behind():
        for i in range(16):
            block.pwrite(bytes([i + 1]) * 4096, i * 4096)
    assert syscalls == [(0, 16 * 4096)]
    assert block.pread(16 * 4096, 0) == b"".join(bytes([i + 1]) * 4096 for i in range(16))


def test_a_gap_or_a_large_write_starts_a_new_request(block, syscalls):
    big = fileio.GATHER_BYTES
    with block.write_behind():
        block.pwrite(b"a" * 4096, 0)
        block.pwrite(b"b" * 4096, 4096)
        block.pwrite(b"c" * 4096, 3 * 4096)  # not contiguous with what is gathered
        block.pwrite(b"d" * big, 1 << 30)  # at the limit: issued by itself
    assert sorted(syscalls) == [(0, 8192), (3 * 4096, 4096), (1 << 30, big)]


def test_gathering_stops_at_the_limit(block, syscalls):
    piece = fileio.GATHER_BYTES // 4
    with block.write_behind():
        for i in range(6):
            block.pwrite(b"x" * piece, i * piece)
    assert sorted(syscalls) == [(0, 4 * piece), (4 * piece, 2 * piece)]


def test_a_read_sees_the_gathered_writes(block):
    with block.write_behind():
        block.pwrite(b"1" * 512, 0)
        block.pwrite(b"2" * 512, 512)
        assert block.pread(1024, 0) == b"1" * 512 + b"2" * 512


def test_overlapping_writes_land_in_issue_order(block):
    with block.write_behind():
        block.pwrite(b"old" * 1000, 0)
        block.pwrite(b"N" * 100, 10)  # overlaps the gathered write: it must not be overtaken
    assert block.pread(3000, 0) == (b"old" * 1000)[:10] + b"N" * 100 + (b"old" * 1000)[110:]


def test_waiting_for_a_buffer_issues_and_finishes_its_writes(block):
    buf = bytearray(b"A" * 4096)
    with block.write_behind():
        block.buffer_tag = 0
        block.pwrite(memoryview(buf), 0)
        block.buffer_tag = 1
        block.pwrite(b"B" * 4096, 4096)
        block.wait_for_buffer(0)
        buf[:] = b"Z" * 4096  # reusing the buffer now must not change what was written
    assert block.pread(8192, 0) == b"A" * 4096 + b"B" * 4096


def test_a_buffer_of_the_ring_is_refilled_only_after_its_writes(block):
    with block.copy_buffers(2, 8192) as ring:
        first_buf, first = ring.take(4096)
        first_buf[first:first + 4096] = b"A" * 4096
        block.pwrite(memoryview(first_buf)[first:first + 4096], 0)
        again, second = ring.take(4096)  # the same buffer has room left: small pieces share it
        assert again is first_buf and second == first + 4096
        other, _start = ring.take(8192)  # no room: the next buffer
        assert other is not first_buf
        back, start = ring.take(8192)  # the ring comes round: the first buffer, once its writes are done
        assert back is first_buf and start == first
        back[start:start + 4096] = b"Z" * 4096
    assert block.pread(4096, 0) == b"A" * 4096


def test_a_failed_write_behind_is_raised(block, monkeypatch):
    def failing(fd, buffers, offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio.os, "pwritev", failing)
    with pytest.raises(fileio.Qcow2Error, match="I/O error while writing"):
        with block.write_behind():
            block.pwrite(b"x" * 4096, 0)


def test_early_writeback_hints_the_ranges_a_batch_behind(block, monkeypatch):
    hints = []
    monkeypatch.setattr(fileio.os, "posix_fadvise", lambda fd, offset, length, advice: hints.append((offset, length, advice)))
    every = 1 << 20
    with block.early_writeback(every):
        for i in range(5):
            block.pwrite(b"w" * every, i * every)
    # each full batch hands over the one before it: the last is left to the final flush
    assert hints == [(i * every, every, os.POSIX_FADV_DONTNEED) for i in range(4)]
    assert block.pread(5 * every, 0) == b"w" * (5 * every)


def test_early_writeback_ignores_a_refused_hint(block, monkeypatch):
    def refusing(fd, offset, length, advice):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(fileio.os, "posix_fadvise", refusing)
    with block.early_writeback(4096):
        for i in range(4):
            block.pwrite(b"q" * 4096, i * 4096)
    assert block.pread(4 * 4096, 0) == b"q" * 4 * 4096


# ---- direct writes ----

def _descriptors_of(monkeypatch, call):
    """The descriptor of every os.<call> (pwritev or preadv) the file makes, in order."""
    calls = []
    real = getattr(os, call)

    def recording(fd, buffers, offset):
        calls.append(fd)
        return real(fd, buffers, offset)

    monkeypatch.setattr(fileio.os, call, recording)
    return calls


@pytest.fixture
def fd_calls(monkeypatch):
    """The descriptor of every pwritev, in order."""
    return _descriptors_of(monkeypatch, "pwritev")


def _aligned(size, fill):
    view = memoryview(directio.aligned_bytearray(size))
    view[:] = fill * size
    return view


def test_aligned_writes_bypass_the_page_cache_and_others_do_not(block, fd_calls):
    with block.direct_writes():
        direct_fd = block._direct_fd
        assert direct_fd is not None, "this filesystem should accept O_DIRECT (ext4 does)"
        block.pwrite(_aligned(8192, b"d"), 0)
        block.pwrite(b"u" * 8192, 8192)  # a bytes object: its address cannot be checked, so it is not aligned
        block.pwrite(_aligned(8192, b"o"), 16384 + 512)  # aligned buffer, unaligned offset
        assert block.pread(8192, 0) == b"d" * 8192  # a read right after a direct write sees it
    assert fd_calls == [direct_fd, block.fd, block.fd]
    assert block._direct_fd is None
    block.flush()
    assert block.pread(16384 + 512 + 8192, 0) == b"d" * 8192 + b"u" * 8192 + bytes(512) + b"o" * 8192


def test_direct_writes_behind_with_gathering(block, fd_calls):
    with block.write_behind(), block.direct_writes():
        direct_fd = block._direct_fd
        for i in range(4):
            block.pwrite(_aligned(4096, bytes([65 + i])), i * 4096)
    assert fd_calls == [direct_fd]
    assert block.pread(4 * 4096, 0) == b"AAAA" * 1024 + b"BBBB" * 1024 + b"CCCC" * 1024 + b"DDDD" * 1024


def test_a_refused_direct_write_goes_through_the_page_cache_from_then_on(block, monkeypatch):
    calls = []
    real = os.pwritev

    def refusing_direct(fd, buffers, offset):
        calls.append(fd)
        if fd != block.fd:
            raise OSError(22, "Invalid argument")
        return real(fd, buffers, offset)

    monkeypatch.setattr(fileio.os, "pwritev", refusing_direct)
    with block.direct_writes():
        direct_fd = block._direct_fd
        block.pwrite(_aligned(4096, b"1"), 0)
        block.pwrite(_aligned(4096, b"2"), 4096)
    assert calls == [direct_fd, block.fd, block.fd]
    assert block.pread(8192, 0) == b"1" * 4096 + b"2" * 4096


def test_without_o_direct_everything_goes_through_the_page_cache(block, fd_calls, monkeypatch):
    monkeypatch.setattr(directio, "open_direct", lambda path: None)
    with block.direct_writes():
        block.pwrite(_aligned(4096, b"x"), 0)
    assert fd_calls == [block.fd]
    assert block.pread(4096, 0) == b"x" * 4096


def test_aligned_bytearrays_start_at_an_alignment_boundary():
    for size in (4096, 65536, 1 << 20, 123457):
        buf = directio.aligned_bytearray(size)
        assert len(buf) == size and not any(buf)
        assert directio.address(memoryview(buf)) % directio.ALIGN == 0
    assert directio.aligned_bytearray(512) == bytearray(512)


def test_alignment_rules():
    view = _aligned(2 * directio.ALIGN, b"a")
    assert directio.qualifies([view], 0)
    assert directio.qualifies([view[:directio.ALIGN], view[directio.ALIGN:]], directio.ALIGN)
    assert not directio.qualifies([view], 512)  # offset
    assert not directio.qualifies([view[:512]], 0)  # length
    assert not directio.qualifies([view[512:512 + directio.ALIGN]], 0)  # address
    assert not directio.qualifies([bytes(directio.ALIGN)], 0)  # read-only: address unknown


def test_a_read_waits_only_for_the_writes_it_overlaps(block, monkeypatch):
    import threading
    release = threading.Event()
    real = os.pwritev

    def slow_far_write(fd, buffers, offset):
        if offset >= 1 << 20:
            assert release.wait(10), "the far write was never let go"
        return real(fd, buffers, offset)

    monkeypatch.setattr(fileio.os, "pwritev", slow_far_write)
    with block.write_behind():
        block.pwrite(b"n" * fileio.GATHER_BYTES, 0)
        block.pwrite(b"f" * fileio.GATHER_BYTES, 1 << 30)  # held back until the near range was read
        assert block.pread(16, 0) == b"n" * 16  # a read that waited for every write behind would time out here
        release.set()
        assert block.pread(16, 1 << 30) == b"f" * 16


def test_a_buffer_change_waits_for_the_pieces_of_the_last_one(block):
    """The ring tells its user before it hands out another buffer: what was read into the last one is written
    while that buffer is still the one the writes are tagged with."""
    seen = []
    with block.copy_buffers(2, 8192) as ring:
        ring.before_switch = lambda: seen.append(block.buffer_tag)
        ring.take(8192)
        assert seen == []
        ring.take(4096)  # no room left: the next buffer, once the user has finished the last one
        assert seen == [0] and block.buffer_tag == 1


def test_digests_taken_behind_the_writes_follow_the_last_write(block):
    """Writes behind are hashed in the worker threads; the digest of a block is still the one of the last write
    that covered it whole, and a later partial change makes it unknown (None)."""
    import hashlib
    with fileio.recording_writes(block.path, 4096) as record:
        with block.write_behind():
            block.pwrite(b"A" * 16384, 0)
            block.pwrite(b"B" * 4096, 4096)  # overlaps the first: issued after it, hashed after it
            block.pwrite(b"C" * 100, 8192)  # part of block 2 only
            block.pwrite(b"D" * 8192, 65536)
    digests = record.digests
    assert digests[0] == digests[3] == hashlib.sha256(b"A" * 4096).digest()
    assert digests[1] == hashlib.sha256(b"B" * 4096).digest()
    assert digests[2] is None
    assert digests[16] == digests[17] == hashlib.sha256(b"D" * 4096).digest()


def test_a_record_from_copies_hashes_nothing_and_keeps_the_copies_still_true(block, tmp_path):
    """from_copies: no digest is taken from the buffers; a block written whole, noted as a copy of a source block at
    the same place within a block, keeps that source block until a later change of it; copies of blocks this
    process did not write, or that do not line up with the source's blocks, are not kept."""
    source = BlockFile(str(tmp_path / "source"), create=True)
    try:
        with fileio.recording_writes(block.path, 4096, from_copies=True) as record:
            with block.write_behind():
                block.pwrite(b"A" * 16384, 0)
            assert fileio.copies_wanted(block) and not fileio.copies_wanted(source)
            fileio.note_copies(block, source, [(0, 8192, 12288), (12288, 100, 4096), (65536, 0, 4096)])
            block.pwrite(b"C" * 100, 4096)  # changes block 1 after its copy was noted
        assert record.digests == {0: None, 1: None, 2: None, 3: None}
        assert record.copied == {0: (source.identity(), 2), 2: (source.identity(), 4)}
        assert record.copied_digests(source.identity(), [b"s%d" % i for i in range(4)]) == {0: b"s2"}
        assert record.copied_digests((0, 0), [b"x"] * 8) == {}
    finally:
        source.close()


def test_views_of_consecutive_bytes_are_read_in_one_request(block, monkeypatch):
    block.pwrite(bytes(range(256)) * 64, 0)
    calls = []
    real = os.preadv

    def recording(fd, buffers, offset):
        calls.append((offset, len(buffers)))
        return real(fd, buffers, offset)

    monkeypatch.setattr(fileio.os, "preadv", recording)
    bufs = [bytearray(1000), bytearray(3000), bytearray(96)]
    block.read_views_into([memoryview(b) for b in bufs], 100)
    assert calls == [(100, 3)]
    assert b"".join(bufs) == (bytes(range(256)) * 64)[100:4196]


def test_views_read_past_the_end_of_file_are_zeros(block):
    block.pwrite(b"x" * 6000, 0)
    bufs = [bytearray(b"?" * 4096), bytearray(b"?" * 4096), bytearray(b"?" * 100)]
    block.read_views_into([memoryview(b) for b in bufs], 0)
    assert bytes(bufs[0]) == b"x" * 4096
    assert bytes(bufs[1]) == b"x" * 1904 + bytes(2192)
    assert bytes(bufs[2]) == bytes(100)


def test_more_views_than_one_request_takes_are_all_filled(block):
    data = bytes(range(256)) * 80
    block.pwrite(data, 0)
    bufs = [bytearray(16) for _view in range(fileio.IOV_MAX + 100)]
    block.read_views_into([memoryview(b) for b in bufs], 0)
    assert b"".join(bufs) == data[:16 * len(bufs)]


# ---- direct reads of what the page cache does not hold ----

def _uncached(block, data, offset=0):
    """Write data at offset, make it durable and drop it from the page cache."""
    block.pwrite(data, offset)
    os.fsync(block.fd)
    os.posix_fadvise(block.fd, 0, 0, os.POSIX_FADV_DONTNEED)


@pytest.fixture
def read_fds(monkeypatch):
    """The descriptor of every preadv, in order."""
    return _descriptors_of(monkeypatch, "preadv")


def test_cached_pages_counts_what_the_page_cache_holds_of_a_range(block):
    _uncached(block, b"c" * (1 << 20))
    assert directio.cached_pages(block.fd, 0, 1 << 20) == (0, 256)
    block.pread(8192, 512 << 10)
    held, pages = directio.cached_pages(block.fd, 0, 1 << 20)
    assert pages == 256 and 2 <= held < 256  # the two pages read, and whatever readahead added after them
    assert directio.cached_pages(block.fd, 0, 256 << 10) == (0, 64)


def test_a_large_read_of_uncached_data_goes_around_the_page_cache(block, read_fds):
    data = bytes(range(256)) * 4096  # 1 MiB
    _uncached(block, data)
    views = [memoryview(directio.aligned_bytearray(256 << 10)) for _view in range(4)]
    block.read_views_into(views, 0)
    assert b"".join(bytes(v) for v in views) == data
    assert read_fds == [block._direct_read_fd] and block._direct_read_fd not in (None, block.fd)
    assert directio.cached_pages(block.fd, 0, 1 << 20) == (0, 256)  # nothing was left in the cache


def test_cached_data_small_reads_and_unaligned_buffers_use_the_page_cache(block, read_fds):
    data = b"w" * (1 << 20)
    block.pwrite(data, 0)  # still in the page cache
    view = memoryview(directio.aligned_bytearray(1 << 20))
    block.read_into(view, 0)
    _uncached(block, data)
    small = memoryview(directio.aligned_bytearray(fileio.DIRECT_READ_MIN - 4096))
    block.read_into(small, 0)
    _uncached(block, data)
    unaligned = memoryview(bytearray((1 << 20) + 1))[1:]
    block.read_into(unaligned, 0)
    assert bytes(view) == data and bytes(small) == data[:len(small)] and bytes(unaligned) == data
    assert read_fds == [block.fd, block.fd, block.fd]


def test_a_direct_read_past_the_end_of_file_is_zeros_beyond_it(block):
    _uncached(block, b"e" * (300 << 10))
    view = memoryview(directio.aligned_bytearray(1 << 20))
    view[:] = b"?" * (1 << 20)
    block.read_into(view, 0)
    assert bytes(view) == b"e" * (300 << 10) + bytes((1 << 20) - (300 << 10))


def test_a_refused_direct_read_goes_through_the_page_cache_from_then_on(block, monkeypatch):
    data = b"r" * (1 << 20)
    _uncached(block, data)
    calls = []
    real = os.preadv

    def refusing_direct(fd, buffers, offset):
        calls.append(fd)
        if fd == block._direct_read_fd:
            raise OSError(22, "Invalid argument")
        return real(fd, buffers, offset)

    monkeypatch.setattr(fileio.os, "preadv", refusing_direct)
    for _read in range(2):
        view = memoryview(directio.aligned_bytearray(1 << 20))
        block.read_into(view, 0)
        assert bytes(view) == data
        os.posix_fadvise(block.fd, 0, 0, os.POSIX_FADV_DONTNEED)
    assert len(calls) == 3 and calls[1:] == [block.fd, block.fd]
    assert block._direct_read_fd is None


def test_a_file_renamed_over_is_not_read_directly(tmp_path, read_fds):
    path = str(tmp_path / "img")
    with open(path, "wb") as f:
        f.write(b"1" * (1 << 20))
    block = BlockFile(path)
    try:
        with open(path + ".new", "wb") as f:
            f.write(b"2" * (1 << 20))
        os.rename(path + ".new", path)
        os.fsync(block.fd)
        os.posix_fadvise(block.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert directio.cached_pages(block.fd, 0, 1 << 20) == (0, 256)
        view = memoryview(directio.aligned_bytearray(1 << 20))
        block.read_into(view, 0)
        assert bytes(view) == b"1" * (1 << 20)  # the file this object opened, not the one now at its path
        assert read_fds == [block.fd]
    finally:
        block.close()


def test_a_process_short_of_descriptors_reads_through_the_page_cache(block, read_fds, monkeypatch):
    monkeypatch.setattr(directio, "_descriptor_budget", lambda: 0)
    _uncached(block, b"d" * (1 << 20))
    view = memoryview(directio.aligned_bytearray(1 << 20))
    block.read_into(view, 0)
    assert bytes(view) == b"d" * (1 << 20)
    assert read_fds == [block.fd]


def test_closing_closes_the_direct_read_descriptor(block):
    _uncached(block, b"x" * (1 << 20))
    block.read_into(memoryview(directio.aligned_bytearray(1 << 20)), 0)
    fd = block._direct_read_fd
    assert fd is not None
    block.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_short_writes_are_retried_from_where_they_stopped(block, monkeypatch):
    real = os.pwritev

    def at_most_5000_bytes(fd, buffers, offset):
        left, cut = 5000, []
        for b in buffers:
            if left <= 0:
                break
            cut.append(memoryview(b)[:left])
            left -= len(cut[-1])
        return real(fd, cut, offset)

    monkeypatch.setattr(fileio.os, "pwritev", at_most_5000_bytes)
    parts = [bytes([i + 1]) * size for i, size in enumerate((3000, 4096, 10, 9000))]
    block.pwritev(parts, 100)
    assert block.pread(sum(map(len, parts)), 100) == b"".join(parts)


def test_a_file_the_page_cache_serves_whole_is_no_longer_asked(block, read_fds, monkeypatch):
    asked = []
    real = directio.cached_pages
    monkeypatch.setattr(directio, "cached_pages", lambda *args: asked.append(args) or real(*args))
    block.pwrite(b"h" * (1 << 20), 0)  # in the page cache
    for _read in range(fileio.WARM_FILE_READS + 3):
        view = memoryview(directio.aligned_bytearray(256 << 10))
        block.read_into(view, 0)
        assert bytes(view) == b"h" * (256 << 10)
    assert len(asked) == fileio.WARM_FILE_READS
    assert read_fds == [block.fd] * (fileio.WARM_FILE_READS + 3)
