"""Label maps at input size from low-resolution logits, without the full-size K-channel tensor.

``resized_argmax(logits, size)`` returns exactly ``argmax(tf.image.resize(logits, size,
"bilinear"), -1)``, pixel for pixel, ties included, but computes the K-channel values only
where the winner is in doubt.

Why it is exact. TensorFlow's CPU ``ResizeBilinear`` (half-pixel centres, no antialias)
computes every output value from the 4 source pixels around it as
``top = tl + (tr - tl) * x_lerp``, ``bottom = bl + (br - bl) * x_lerp``,
``out = top + (bottom - top) * y_lerp`` in float32 (``resize_bilinear_op.cc``), with
``in = (out_index + 0.5) * in_size / out_size - 0.5``, ``lower = max(floor(in), 0)``,
``upper = min(ceil(in), in_size - 1)``, ``lerp = in - floor(in)``. :func:`bilinear_taps`
reproduces those taps and :func:`_lerp` that arithmetic, op for op, so values computed
here are bit-identical to the kernel's (tested).

Output pixels are grouped by their *cell*, the 2x2 source pixels (i, j), (i, j+1),
(i+1, j), (i+1, j+1) whose ``lower`` taps are (i, j). Within a cell every class score is
a bilinear function of the position, and so is the difference of two scores, which
therefore takes its extreme values at the 4 corners. Hence:

1. *Certain cells*: if one class j is the argmax at all 4 corners with a gap of more than
   ``margin`` to the runner-up at each, j wins at every output pixel of the cell. Their
   labels are gathered from the stride-level argmax map: no K-channel work at all.
2. *Uncertain cells*: class k can only win somewhere in the cell if its largest corner
   value reaches the largest smallest-corner value of any class (``max_c s_k(c) >=
   max_j min_c s_j(c) - margin``). The values of those candidate classes (usually 2-5 of
   K) are computed with the kernel's arithmetic at the cell's output pixels, and the
   first maximum among them (candidates kept in class order) is the label.

``margin`` covers float rounding: each interpolated value is within ~10 ulp of
``max |logit|`` of the exact convex combination; ``margin = max |logit| * 2**-18`` is 30
times that bound. Ties: ``tf.argmax`` returns the smallest index among equal maxima; a
certain cell has no tie (gap > margin), and candidates are evaluated in ascending class
order with a first-maximum argmax, so ties resolve to the smallest class index as well.
Logits with NaN or infinity, and inputs where the uncertain work would exceed the dense
path's, take the dense path (the reference expression itself).

Cost: a top-2 over the K channels at the logits' resolution, integer gathers at the
output resolution, and K-channel work proportional to the uncertain cells only. A
trained model's label map changes at object boundaries, so most cells are certain; a
randomly initialised network (labels flickering at stride 4) leaves most cells
uncertain and gains less.
"""

from __future__ import annotations

import tensorflow as tf

# margin = max|logit| * 2**-18, ~30x the worst rounding error of two lerps in float32.
_MARGIN_SCALE = 2.0 ** -18
# With more than this share of uncertain cells the dense expression is cheaper.
MAX_UNCERTAIN_SHARE = 0.4
# Below this many classes the dense resize + argmax is cheaper than the bookkeeping.
MIN_SPARSE_CLASSES = 24


def bilinear_taps(in_size, out_size):
    """Source taps of ``tf.image.resize(..., "bilinear")`` along one axis.

    Reproduces TF's CPU ``ResizeBilinear`` with ``half_pixel_centers=True`` (the kernel
    behind ``tf.image.resize``; ``compute_interpolation_weights`` with
    ``HalfPixelScaler``): ``scale = in / out`` in float32, ``pos = (i + 0.5) * scale -
    0.5``, ``lower = max(floor(pos), 0)``, ``upper = min(ceil(pos), in - 1)``,
    ``lerp = pos - floor(pos)``.

    Args:
      in_size, out_size: int32 scalars (tensors or ints), both >= 1.

    Returns:
      (lower int32 [out], upper int32 [out], lerp float32 [out]).
    """
    in_size = tf.cast(in_size, tf.int32)
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    pos = (tf.cast(tf.range(out_size), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(pos)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(pos), tf.int32), in_size - 1)
    return lower, upper, pos - floor


def _lerp(a, b, t):
    """``a + (b - a) * t``: the kernel's 1-D interpolation, same float32 operations."""
    return a + (b - a) * t


def dense_resized_argmax(logits, size):
    """The reference: ``argmax(tf.image.resize(logits, size, "bilinear"), -1)`` int32."""
    return tf.argmax(tf.image.resize(logits, size, method="bilinear"), axis=-1, output_type=tf.int32)


def _shift(x, axis):
    """x[i + 1] along ``axis`` (1 or 2), the last index repeated (the kernel's clamp)."""
    if axis == 1:
        return tf.concat([x[:, 1:], x[:, -1:]], axis=1)
    return tf.concat([x[:, :, 1:], x[:, :, -1:]], axis=2)


def _pieces(lower, n_cells, out_size):
    """Splits the output indices of each cell into runs of at most ``ceil(out / in)``.

    Output indices of cell i (``lower == i``) are contiguous. Returns (cell int32 [P],
    start int32 [P], length int32 [P], run int32 scalar).
    """
    cells = tf.range(n_cells)
    begin = tf.searchsorted(lower, cells, side="left", out_type=tf.int32)
    end = tf.searchsorted(lower, cells, side="right", out_type=tf.int32)
    run = tf.maximum((out_size + n_cells - 1) // n_cells, 1)
    count = (end - begin + run - 1) // run
    cell = tf.repeat(cells, count)
    first = tf.repeat(tf.cumsum(count, exclusive=True), count)
    start = tf.gather(begin, cell) + (tf.range(tf.size(cell)) - first) * run
    length = tf.minimum(run, tf.gather(end, cell) - start)
    return cell, start, length, run


def _block_taps(start, length, run, taps):
    """Output indices of unit blocks along one axis and their taps.

    start, length: int32 [U]; run: int32 block size. Returns (index [U, run] (clamped
    into the block), inside bool [U, run], degenerate bool [U, run] (lower == upper),
    lerp float32 [U, run]).
    """
    lower, upper, lerp = taps
    offsets = tf.range(run)[None, :]
    inside = offsets < length[:, None]
    index = tf.where(inside, start[:, None] + offsets, start[:, None])
    degenerate = tf.equal(tf.gather(lower, index), tf.gather(upper, index))
    return index, inside, degenerate, tf.gather(lerp, index)


def _sparse_resized_argmax(s, size, num_classes, max_uncertain_share):
    shape = tf.shape(s)
    h, w = shape[1], shape[2]
    out_h, out_w = size[0], size[1]
    y_taps, x_taps = bilinear_taps(h, out_h), bilinear_taps(w, out_w)

    # 1. Certain cells: one winner at the 4 corners, each time ahead by more than margin.
    winner = tf.argmax(s, axis=-1, output_type=tf.int32)
    best = tf.reduce_max(s, axis=-1, keepdims=True)
    margin = tf.maximum(tf.reduce_max(best), -tf.reduce_min(s)) * _MARGIN_SCALE
    close = tf.reduce_sum(tf.cast(s >= best - margin, tf.int32), axis=-1)  # 1: clear winner
    w01, w10 = _shift(winner, 2), _shift(winner, 1)
    c01, c10 = _shift(close, 2), _shift(close, 1)
    same = tf.equal(winner, w01) & tf.equal(winner, w10) & tf.equal(winner, _shift(w01, 1))
    clear = tf.equal(tf.maximum(tf.maximum(close, c01), tf.maximum(c10, _shift(c01, 1))), 1)
    uncertain = ~(same & clear)  # [B, h, w]
    labels = tf.gather(tf.gather(winner, y_taps[0], axis=1), x_taps[0], axis=2)  # right if certain

    def refine():
        # 2. Uncertain units (runs of output pixels of one uncertain cell) and their corners.
        y_cell, y_start, y_len, y_run = _pieces(y_taps[0], h, out_h)
        x_cell, x_start, x_len, x_run = _pieces(x_taps[0], w, out_w)
        units = tf.cast(tf.where(tf.gather(tf.gather(uncertain, y_cell, axis=1), x_cell, axis=2)), tf.int32)
        b, py, px = units[:, 0], units[:, 1], units[:, 2]
        i, j = tf.gather(y_cell, py), tf.gather(x_cell, px)
        i1, j1 = tf.minimum(i + 1, h - 1), tf.minimum(j + 1, w - 1)
        corners = [tf.gather_nd(s, tf.stack([b, r, c], axis=1)) for r, c in ((i, j), (i, j1), (i1, j), (i1, j1))]

        # 3. Candidates: classes whose largest corner value reaches the largest smallest
        # corner value of any class. tf.where lists them by unit, then by class.
        hi = tf.maximum(tf.maximum(corners[0], corners[1]), tf.maximum(corners[2], corners[3]))
        lo = tf.minimum(tf.minimum(corners[0], corners[1]), tf.minimum(corners[2], corners[3]))
        pairs = tf.cast(tf.where(hi >= tf.reduce_max(lo, axis=-1, keepdims=True) - margin), tf.int32)
        unit, cls = pairs[:, 0], pairs[:, 1]
        flat = unit * num_classes + cls
        v00, v01, v10, v11 = [tf.gather(tf.reshape(c, [-1]), flat)[:, None, None] for c in corners]

        # 4. The kernel's arithmetic at each unit's pixel block, for each candidate.
        ys, y_in, y_deg, y_t = _block_taps(tf.gather(y_start, py), tf.gather(y_len, py), y_run, y_taps)
        xs, x_in, x_deg, x_t = _block_taps(tf.gather(x_start, px), tf.gather(x_len, px), x_run, x_taps)
        x_deg, x_t = tf.gather(x_deg, unit)[:, None, :], tf.gather(x_t, unit)[:, None, :]
        y_deg, y_t = tf.gather(y_deg, unit)[:, :, None], tf.gather(y_t, unit)[:, :, None]
        top = _lerp(v00, tf.where(x_deg, v00, v01), x_t)  # [P, 1, run_x]
        bottom = _lerp(v10, tf.where(x_deg, v10, v11), x_t)
        values = _lerp(top, tf.where(y_deg, top, bottom), y_t)  # [P, run_y, run_x]

        # 5. Per unit and pixel: the smallest class among the candidates with the largest value.
        peak = tf.math.segment_max(values, unit)  # [U, run_y, run_x]
        ties = tf.where(tf.equal(values, tf.gather(peak, unit)), cls[:, None, None], num_classes)
        block = tf.math.segment_min(ties, unit)
        inside = y_in[:, :, None] & x_in[:, None, :]
        grid = tf.shape(block)
        coords = tf.stack([tf.broadcast_to(b[:, None, None], grid), tf.broadcast_to(ys[:, :, None], grid),
                           tf.broadcast_to(xs[:, None, :], grid)], axis=-1)
        return tf.tensor_scatter_nd_update(labels, tf.boolean_mask(coords, inside), tf.boolean_mask(block, inside))

    # A randomly initialised network leaves most cells uncertain; there the dense
    # expression is cheaper than the bookkeeping.
    share = tf.reduce_mean(tf.cast(uncertain, tf.float32))
    return tf.cond(share <= max_uncertain_share, refine, lambda: dense_resized_argmax(s, size))


def resized_argmax(logits, size, min_classes: int = MIN_SPARSE_CLASSES,
                   max_uncertain_share: float = MAX_UNCERTAIN_SHARE):
    """``argmax(tf.image.resize(logits, size, "bilinear"), -1)``, exactly, at the cost of
    the uncertain pixels (see the module docstring).

    Args:
      logits: float [B, h, w, K] (cast to float32), K known statically.
      size: (H, W) ints or an int32 tensor [2].
      min_classes: below this K the dense expression is used (cheaper there).
      max_uncertain_share: above this share of uncertain cells the dense expression is
        used (cheaper there). Both only choose the cheaper of two exact computations.

    Returns:
      int32 [B, H, W] class indices, identical to the dense expression.
    """
    s = tf.cast(logits, tf.float32)
    size = tf.cast(tf.convert_to_tensor(size), tf.int32)
    num_classes = s.shape[-1]
    if num_classes is None or num_classes < max(min_classes, 2):
        return dense_resized_argmax(s, size)
    return tf.cond(
        tf.reduce_all(tf.math.is_finite(s)),
        lambda: _sparse_resized_argmax(s, size, int(num_classes), max_uncertain_share),
        lambda: dense_resized_argmax(s, size),
    )
