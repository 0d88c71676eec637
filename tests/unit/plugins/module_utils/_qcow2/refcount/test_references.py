"""RefMap: the dense and the sparse representation answer every query the same way."""

from __future__ import annotations

from hypothesis import given, strategies as st

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.refcount.references import DENSE_LIMIT, RefMap

ops = st.lists(st.tuples(st.sampled_from(['inc', 'set']), st.integers(0, 5000), st.integers(0, 3)), max_size=60)


def build(nb_clusters, operations):
    refs = RefMap(nb_clusters)
    for op, cluster, n in operations:
        if op == 'inc':
            refs.inc(cluster, n)
        else:
            refs.set(cluster, n)
    return refs


@given(ops, st.integers(0, 5000), st.integers(1, 700), st.sampled_from([0, 4, 8]))
def test_dense_and_sparse_agree(operations, start, span, bits):
    dense = build(1000, operations)
    sparse = build(DENSE_LIMIT + 1, operations)
    model = {}
    for op, cluster, n in operations:
        model[cluster] = model.get(cluster, 0) + n if op == 'inc' else n

    end = start + span
    assert list(dense.slice(start, end)) == list(sparse.slice(start, end)) == [model.get(c, 0) for c in range(start, end)]
    assert dense.any_in(start, end) == sparse.any_in(start, end) == any(model.get(c) for c in range(start, end))
    assert dense.highest_nonzero() == sparse.highest_nonzero() == max((c for c, v in model.items() if v), default=-1)
    groups = sorted({c >> bits for c, v in model.items() if v})
    assert dense.used_groups(bits) == sparse.used_groups(bits) == groups
    for cluster in list(model)[:5]:
        assert dense.get(cluster) == sparse.get(cluster) == model[cluster]


def test_sparse_mode_is_used_for_huge_files_and_stays_small():
    refs = RefMap(1 << 40)
    refs.inc(5)
    refs.inc((1 << 40) - 1)
    assert refs.used_groups(16) == [0, ((1 << 40) - 1) >> 16]
    assert refs.size == 1 << 40
    assert list(refs.slice((1 << 40) - 2, 1 << 40)) == [0, 1]
