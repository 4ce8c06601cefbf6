"""Both matchers against scipy's linear_sum_assignment: ties, padding, empty images, XLA."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linear_sum_assignment

from kseg.losses.matcher import hungarian_match, match, scipy_match


def random_problem(rng, b, q, t, ties):
    if ties:  # few distinct values: many optimal assignments
        cost = rng.integers(0, 3, (b, q, t)).astype("float32")
    else:
        cost = rng.normal(size=(b, q, t)).astype("float32")
    counts = rng.integers(0, t + 1, b)
    counts[0] = 0  # an image without segments
    counts[-1] = t  # a full one
    valid = np.zeros((b, t), bool)
    for i, c in enumerate(counts):  # valid targets scattered among padding, not only a prefix
        valid[i, rng.choice(t, c, replace=False)] = True
    return cost, valid


def optimal_cost(cost, valid):
    total = []
    for c, v in zip(cost, valid):
        cols = np.flatnonzero(v)
        r, k = linear_sum_assignment(c[:, cols]) if cols.size else ([], [])
        total.append(float(c[:, cols][r, k].sum()) if cols.size else 0.0)
    return np.array(total)


def check_assignment(assign, cost, valid):
    assign = np.asarray(assign)
    assert assign.shape == valid.shape and assign.dtype == np.int32
    assert np.all(assign[~valid] == -1)
    totals = []
    for a, c, v in zip(assign, cost, valid):
        picked = a[v]
        assert np.all(picked >= 0) and np.all(picked < c.shape[0])
        assert len(set(picked.tolist())) == len(picked)  # distinct predictions
        totals.append(float(c[picked, np.flatnonzero(v)].sum()))
    return np.array(totals)


@pytest.mark.parametrize("method", ["scipy", "hungarian"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("q, t", [(10, 4), (7, 7), (20, 11)])
def test_matchers_reach_scipy_optimum(method, ties, q, t):
    rng = np.random.default_rng(q * 100 + t + ties)
    cost, valid = random_problem(rng, 6, q, t, ties)
    got = check_assignment(match(tf.constant(cost), tf.constant(valid), method), cost, valid)
    np.testing.assert_allclose(got, optimal_cost(cost, valid), rtol=1e-5, atol=1e-5)


def test_hungarian_agrees_with_scipy_on_many_problems_and_under_xla():
    rng = np.random.default_rng(0)
    cost, valid = random_problem(rng, 64, 16, 9, ties=False)
    cost[3, 2, 1] = np.nan  # non-finite costs still give a valid matching
    cost[4, :, :] = np.inf
    xla = tf.function(hungarian_match, jit_compile=True)
    graph = np.asarray(xla(tf.constant(cost), tf.constant(valid)))
    host = np.asarray(scipy_match(tf.constant(cost), tf.constant(valid)))
    clean = np.where(np.isfinite(cost), cost, 1e6)
    np.testing.assert_allclose(check_assignment(graph, clean, valid), check_assignment(host, clean, valid),
                               rtol=1e-5)
    # without ties the optimum is unique: identical assignments
    ok = np.isfinite(cost).all(axis=(1, 2))
    np.testing.assert_array_equal(graph[ok], host[ok])


def test_matchers_trace_with_unknown_batch_and_reject_bad_input():
    spec = [tf.TensorSpec((None, 5, 3), tf.float32), tf.TensorSpec((None, 3), tf.bool)]
    for fn in (scipy_match, hungarian_match):
        out = tf.function(fn, input_signature=spec).get_concrete_function().structured_outputs
        assert out.shape.as_list() == [None, 3]
    with pytest.raises(ValueError, match="T <= Q"):
        hungarian_match(tf.zeros((1, 2, 3)), tf.ones((1, 3), bool))
    with pytest.raises(ValueError, match="unknown matcher"):
        match(tf.zeros((1, 2, 1)), tf.ones((1, 1), bool), "auction")
