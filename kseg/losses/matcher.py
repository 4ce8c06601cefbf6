"""Bipartite (Hungarian) matching of predictions to ground-truth segments (MaskFormer Sec. 3.2,
following DETR): two matchers with one interface.

``match(cost, valid, method)``:
  cost: (B, Q, T) float matching costs, prediction q x target t (gradients are stopped);
  valid: (B, T) bool, False for padding targets (each image has its own number of
    segments, padded to a static T; an image may have none);
  returns (B, T) int32: the prediction matched to each valid target, -1 for padding.
  Every valid target gets a distinct prediction and the total cost is minimal, which
  requires T <= Q (more queries than segments, MaskFormer Sec. 3.2).

Methods:
- ``"scipy"`` (default): ``scipy.optimize.linear_sum_assignment`` per image on the valid
  columns, through ``tf.numpy_function`` (a host call: exact, fast, but not compilable by
  XLA and not usable on TPU). This is what the authors run (their ``HungarianMatcher``).
- ``"hungarian"``: an in-graph, batched Hungarian algorithm (the O(T^2 Q) shortest
  augmenting path form of Kuhn-Munkres with row/column potentials, Jonker & Volgenant
  1987) in ``tf.while_loop``s, vectorised over the batch and the columns; padding rows are
  skipped. Exact like scipy (ties may be broken differently; the total cost is the same).
  Usable under ``jit_compile=True`` and on TPU.

Non-finite costs (NaN/inf from a diverging model) are replaced by a large finite cost so
both matchers always return a valid assignment.
"""

import numpy as np
import tensorflow as tf

METHODS = ("scipy", "hungarian")
_BIG = 1e6  # replaces non-finite costs
_INF = 1e30  # "infinity" inside the in-graph algorithm (well above any sane cost)


def _sanitize(cost):
    cost = tf.stop_gradient(tf.cast(cost, tf.float32))
    return tf.where(tf.math.is_finite(cost), cost, tf.fill(tf.shape(cost), _BIG))


def _scipy_assign(cost, valid):
    from scipy.optimize import linear_sum_assignment

    out = np.full(valid.shape, -1, np.int32)
    for b in range(cost.shape[0]):
        cols = np.flatnonzero(valid[b])
        if cols.size:
            rows, picked = linear_sum_assignment(cost[b][:, cols])
            out[b, cols[picked]] = rows
    return out


def scipy_match(cost, valid):
    """The ``"scipy"`` matcher (module docstring). Runs on the host; not XLA-compilable."""
    cost = _sanitize(cost)
    valid = tf.cast(valid, tf.bool)
    out = tf.numpy_function(_scipy_assign, [cost, valid], tf.int32, stateful=False)
    out.set_shape(valid.shape)
    return out


def hungarian_match(cost, valid):
    """The in-graph ``"hungarian"`` matcher (module docstring).

    Rows are targets (n = T), columns predictions (m = Q); index 0 of each is a dummy as in
    the classic formulation. For each valid row, a Dijkstra-like search over the columns
    with reduced costs ``a[i, j] - u[i] - v[j]`` grows an alternating tree until it reaches
    a free column, updating the potentials so reduced costs stay non-negative, then flips
    the augmenting path. Each batch element stops independently (a ``done`` mask); the
    loops run until every element is done.
    """
    cost = _sanitize(cost)
    valid = tf.cast(valid, tf.bool)
    b = tf.shape(cost)[0]
    n, m = cost.shape[2], cost.shape[1]
    if n is None or m is None:
        raise ValueError(f"hungarian_match needs static Q and T, got cost shape {cost.shape}")
    if n > m:
        raise ValueError(f"more targets ({n}) than predictions ({m}): Hungarian matching needs T <= Q")
    # a[b, i, j]: row i = target i-1, column j = prediction j-1; row/column 0 are dummies.
    a = tf.pad(tf.transpose(cost, (0, 2, 1)), [[0, 0], [1, 0], [1, 0]])
    cols = tf.range(m + 1)
    real_col = cols[None, :] > 0  # (1, m+1)
    rows_1h = tf.range(n + 1)
    batch = tf.range(b)

    def gather_b(x, idx):  # x (B, K), idx (B,) -> (B,)
        return tf.gather(x, idx, batch_dims=1)

    def row_step(i, u, v, p, way):
        active = tf.gather(valid, i - 1, axis=1)
        p = tf.where(active[:, None] & tf.equal(cols, 0)[None], i, p)
        j0 = tf.zeros((b,), tf.int32)
        minv = tf.fill((b, m + 1), _INF)
        used = tf.zeros((b, m + 1), tf.bool)
        done = tf.logical_not(active)

        def search_cond(j0, u, v, minv, used, way, done):
            return tf.logical_not(tf.reduce_all(done))

        def search_body(j0, u, v, minv, used, way, done):
            live = tf.logical_not(done)[:, None]
            used = used | (tf.equal(cols[None], j0[:, None]) & live)
            i0 = gather_b(p, j0)
            row = tf.gather(a, i0, batch_dims=1)  # (B, m+1)
            cur = row - gather_b(u, i0)[:, None] - v
            free = tf.logical_not(used) & real_col
            better = free & (cur < minv) & live
            minv = tf.where(better, cur, minv)
            way = tf.where(better, j0[:, None], way)
            cand = tf.where(free, minv, _INF)
            delta = tf.reduce_min(cand, axis=1)
            j1 = tf.argmin(cand, axis=1, output_type=tf.int32)
            delta_live = tf.where(done, 0.0, delta)[:, None]
            # u[p[j]] += delta for used j (p is injective on used columns); v[j] -= delta.
            owner = tf.cast(tf.equal(p[:, :, None], rows_1h[None, None, :]), tf.float32)  # (B, m+1, n+1)
            u = u + tf.reduce_sum(owner * tf.cast(used, tf.float32)[:, :, None], axis=1) * delta_live
            v = v - tf.where(used, delta_live, 0.0)
            minv = tf.where(used, minv, minv - delta_live)
            j0 = tf.where(done, j0, j1)
            done = done | tf.equal(gather_b(p, j0), 0)
            return j0, u, v, minv, used, way, done

        j0, u, v, minv, used, way, _ = tf.while_loop(
            search_cond, search_body, (j0, u, v, minv, used, way, done), maximum_iterations=m + 1)

        def flip_cond(j0, p):
            return tf.reduce_any(j0 > 0)

        def flip_body(j0, p):
            moving = j0 > 0
            j1 = gather_b(way, j0)
            new_owner = gather_b(p, j1)
            upd = moving[:, None] & tf.equal(cols[None], j0[:, None])
            p = tf.where(upd, new_owner[:, None], p)
            return tf.where(moving, j1, j0), p

        j0 = tf.where(active, j0, 0)
        _, p = tf.while_loop(flip_cond, flip_body, (j0, p), maximum_iterations=m + 1)
        return i + 1, u, v, p, way

    init = (tf.constant(1), tf.zeros((b, n + 1)), tf.zeros((b, m + 1)), tf.zeros((b, m + 1), tf.int32),
            tf.zeros((b, m + 1), tf.int32))
    # Rows after the last valid one in every image are skipped (the criterion's targets are a
    # valid prefix, largest first, so typically only ~10 of T=100 rows run).
    last = tf.reduce_max(tf.where(valid, tf.range(1, n + 1)[None, :], 0))
    _, _, _, p, _ = tf.while_loop(lambda i, *_: i <= last, row_step, init, maximum_iterations=n)
    # p[b, j] = 1-based target matched to prediction j-1 (0: none) -> prediction per target.
    hit = tf.equal(p[:, 1:, None], tf.range(1, n + 1)[None, None, :])  # (B, m, n)
    pred = tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32)
    return tf.where(tf.reduce_any(hit, axis=1) & valid, pred, -1)


def match(cost, valid, method="scipy"):
    """Dispatches to :func:`scipy_match` or :func:`hungarian_match` (module docstring).

    Raises: ValueError for an unknown ``method``.
    """
    if method == "scipy":
        return scipy_match(cost, valid)
    if method == "hungarian":
        return hungarian_match(cost, valid)
    raise ValueError(f"unknown matcher {method!r}; choose one of {METHODS}")
