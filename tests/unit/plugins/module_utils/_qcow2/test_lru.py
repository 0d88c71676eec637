"""The write-back metadata cache: LRU eviction of clean entries, dirty ones written only by the owner's flush."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.lru import MetadataCache


class Backing:
    """A fake disk: counts loads, records stores, flushes through the cache like the image's ordered flush."""

    def __init__(self):
        self.loads = []
        self.stores = []
        self.flushes = 0
        self.cache = None

    def load(self, key):
        self.loads.append(key)
        return ['loaded', key]

    def store(self, key, value):
        self.stores.append((key, list(value)))

    def flush_all(self):
        self.flushes += 1
        self.cache.write_dirty()


def make(max_entries):
    disk = Backing()
    disk.cache = MetadataCache(max_entries, disk.load, disk.store, disk.flush_all)
    return disk, disk.cache


def test_hits_do_not_reload():
    disk, cache = make(4)
    first = cache.get(1)
    assert cache.get(1) is first
    assert disk.loads == [1]


def test_least_recently_used_clean_entry_is_evicted():
    disk, cache = make(3)
    for key in (1, 2, 3):
        cache.get(key)
    cache.get(1)  # 2 is now the oldest
    cache.get(4)
    cache.get(1)
    cache.get(3)
    assert disk.loads == [1, 2, 3, 4]
    cache.get(2)
    assert disk.loads[-1] == 2 and len(cache) == 3


def test_dirty_entries_are_skipped_by_eviction():
    disk, cache = make(3)
    cache.get(1)[0] = 'changed'
    cache.mark_dirty(1)
    cache.get(2)
    cache.get(3)
    cache.get(4)  # evicts 2, the oldest clean entry, not 1
    assert disk.stores == [] and disk.flushes == 0
    assert cache.get(1)[0] == 'changed'
    assert disk.loads == [1, 2, 3, 4]


def test_when_everything_is_dirty_the_owner_flushes_before_evicting():
    disk, cache = make(2)
    for key in (1, 2):
        cache.put_new(key, ['new', key])
    cache.get(3)
    assert disk.flushes == 1
    assert disk.stores == [(1, ['new', 1]), (2, ['new', 2])]
    assert not cache.dirty and len(cache) == 2


def test_write_dirty_stores_each_dirty_entry_once_in_key_order():
    disk, cache = make(8)
    for key in (5, 1, 3):
        cache.put_new(key, [key])
    cache.get(2)
    cache.mark_dirty(5)
    cache.write_dirty()
    cache.write_dirty()
    assert disk.stores == [(1, [1]), (3, [3]), (5, [5])]


def test_a_read_only_owner_that_cannot_clean_grows_instead_of_losing_data():
    disk, cache = make(2)
    disk.flush_all = lambda: None  # read-only image: flushing writes nothing
    cache._flush_all = disk.flush_all
    cache.put_new(1, ['a'])
    cache.put_new(2, ['b'])
    cache.get(3)
    assert len(cache) == 3 and cache.dirty


def test_drop_forgets_dirty_state_and_put_clean_is_not_written():
    disk, cache = make(4)
    cache.put_new(1, ['x'])
    cache.drop(1)
    cache.put_clean(2, ['y'])
    cache.write_dirty()
    assert disk.stores == []
    assert cache.get(1) == ['loaded', 1]
