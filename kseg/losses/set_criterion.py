"""MaskFormer's set criterion (Cheng et al. 2021, Sec. 3.2 Eq. 1 and Sec. 4): semantic labels
-> a set of binary target masks, Hungarian matching per image and per decoder layer, and
cross-entropy + 20 x focal + 1 x dice on the matched pairs.

Targets (authors' ``MaskFormerSemanticDatasetMapper``): every class present in an image's
label map, except the ignore index, gives one binary mask ``label == c``. Ignore pixels are
therefore negatives in every target mask (as the authors; they are not excluded from the
mask losses). The per-image sets are padded to a static ``max_targets`` T with a validity
mask; the largest classes are kept first, so an image with more than T classes (T =
min(K, Q) by default, never reached on the paper's datasets) drops its smallest ones.

Matching cost of prediction q and target t (authors' ``HungarianMatcher``; HF
``MaskFormerHungarianMatcher``): ``-p_q(c_t) + 20 * focal(m_q, m_t) + 1 * dice(m_q, m_t)``
with class probabilities (not log-probabilities), computed at the prediction's stride-4
resolution on targets downsampled with nearest neighbour (PyTorch's index rule).

Loss per decoder output (the last layer and every auxiliary layer, equally weighted):
- cross-entropy over K+1 classes for all Q predictions, unmatched ones labelled "no
  object"; class weights 1 (or ``class_weight``) and ``no_object_weight`` = 0.1 for the
  no-object class; averaged as PyTorch's weighted ``F.cross_entropy`` (sum of w * ce over
  sum of w) over this replica's batch;
- sigmoid focal (alpha 0.25, gamma 2; mean over pixels) x ``mask_weight`` (20) and dice x
  ``dice_weight`` (1) of the matched masks, the predictions bilinearly upsampled
  (align_corners=False) to the label resolution, summed over masks and divided by
  ``num_masks`` = max(1, total valid targets over all replicas / replicas) (authors'
  ``SetCriterion``: all-reduced count divided by the world size).

The returned value is this replica's loss; ``MaskClassificationSegmentor.compute_loss``
scales it by 1/replicas and Keras sums the replicas' gradients, which reproduces the
authors' DDP average. All of it runs in float32.
"""

import keras
import tensorflow as tf

from kseg.heads.maskformer_head import torch_nearest_resize
from kseg.losses.mask_losses import dice_loss, sigmoid_focal_loss
from kseg.losses.matcher import METHODS, match


def semantic_targets(labels, num_classes, max_targets, ignore_index=255):
    """Per-image target sets from semantic label maps.

    Args:
      labels: (B, H, W) int labels; ``ignore_index`` (and any value outside [0, K)) is no class.
      num_classes: K. max_targets: T, the static size of each set.
    Returns: ``(classes, valid)``: (B, T) int32 class ids (largest area first; padding
      entries hold class 0) and (B, T) bool validity. Masks are ``labels == classes[b, t]``.
    """
    labels = tf.cast(labels, tf.int32)
    b = tf.shape(labels)[0]
    flat = tf.reshape(labels, (b, -1))
    ok = (flat >= 0) & (flat < num_classes) & (flat != ignore_index)
    ids = tf.where(ok, flat + tf.range(b)[:, None] * num_classes, b * num_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, b * num_classes + 1)
    counts = tf.reshape(counts[:-1], (b, num_classes))
    top, classes = tf.math.top_k(counts, k=max_targets)
    valid = top > 0
    return tf.where(valid, classes, 0), valid


def _target_masks(labels, classes):
    """(B, H, W) labels, (B, T) classes -> (B, H, W, T) float32 binary masks."""
    return tf.cast(tf.equal(tf.cast(labels, tf.int32)[..., None], classes[:, None, None, :]), tf.float32)


def pairwise_mask_costs(mask_logits, target_masks, alpha=0.25, gamma=2.0):
    """Focal and dice costs between every prediction and every target mask.

    Args: mask_logits (L, B, P, Q) (L outputs of the same batch, e.g. decoder layers) and
      target_masks (B, P, T), float32, P pixels.
    Returns: ``(focal, dice)``, each (L, B, Q, T): the per-pair values of
      :func:`kseg.losses.mask_losses.sigmoid_focal_loss` (mean over pixels) and
      :func:`~kseg.losses.mask_losses.dice_loss` (smoothing 1), computed with matrix
      products instead of Q x T separate calls (authors' ``batch_sigmoid_focal_loss`` /
      ``batch_dice_loss``).
    """
    x = tf.cast(mask_logits, tf.float32)
    t = tf.cast(target_masks, tf.float32)
    p = tf.sigmoid(x)
    pos = alpha * tf.pow(1.0 - p, gamma) * tf.nn.softplus(-x)  # -log(p) for positives
    neg = (1.0 - alpha) * tf.pow(p, gamma) * tf.nn.softplus(x)  # -log(1-p) for negatives
    pixels = tf.cast(tf.shape(x)[2], tf.float32)
    # sum_p pos*t + neg*(1-t) = sum_p (pos-neg)*t + sum_p neg
    focal = (tf.einsum("lbpq,bpt->lbqt", pos - neg, t) + tf.reduce_sum(neg, axis=2)[..., None]) / pixels
    numerator = 2.0 * tf.einsum("lbpq,bpt->lbqt", p, t)
    denominator = tf.reduce_sum(p, axis=2)[..., None] + tf.reduce_sum(t, axis=1)[None, :, None, :]
    dice = 1.0 - (numerator + 1.0) / (denominator + 1.0)
    return focal, dice


@keras.saving.register_keras_serializable(package="kseg")
class MaskFormerCriterion:
    """``criterion(labels, outputs) -> float32 scalar`` (module docstring).

    Args:
      num_classes: K. num_queries: Q (sets the default ``max_targets`` = min(K, Q)).
      no_object_weight: 0.1. mask_weight: focal weight, 20. dice_weight: 1. ce_weight: 1.
      class_cost_weight: weight of -p(class) in the matching cost (1); the mask terms of
        the cost use ``mask_weight`` and ``dice_weight`` (authors' matcher).
      focal_alpha, focal_gamma: 0.25, 2.
      matcher: "scipy" (host, default) or "hungarian" (in-graph, XLA/TPU); see
        :mod:`kseg.losses.matcher`.
      max_targets: T (default min(K, Q)); must be <= K and <= Q.
      ignore_index: 255. class_weight: optional K per-class CE weights.
      compact_targets: compute the full-resolution mask losses on the valid targets only
        (dynamic shapes: less memory, not XLA-compilable) instead of all T padded slots.
        Default: True with the host "scipy" matcher, False with "hungarian" (XLA/TPU).
    Inputs: labels (B, H, W) int (a trailing channel of 1 is squeezed); outputs: the
      model's dict (``class_logits`` (B, Q, K+1), ``mask_logits`` (B, h, w, Q), optional
      ``aux_outputs``).
    Raises: ValueError for an unknown matcher, max_targets > Q, or a class_weight whose
      length is not K.
    """

    def __init__(self, num_classes, num_queries=100, no_object_weight=0.1, mask_weight=20.0, dice_weight=1.0,
                 ce_weight=1.0, class_cost_weight=1.0, focal_alpha=0.25, focal_gamma=2.0, matcher="scipy",
                 max_targets=None, ignore_index=255, class_weight=None, compact_targets=None,
                 name="maskformer_criterion"):
        if matcher not in METHODS:
            raise ValueError(f"unknown matcher {matcher!r}; choose one of {METHODS}")
        self.max_targets = int(max_targets or min(num_classes, num_queries))
        if self.max_targets > num_classes:
            raise ValueError(f"max_targets {self.max_targets} exceeds num_classes {num_classes}: an image has "
                             "at most one target per class")
        if self.max_targets > num_queries:
            raise ValueError(f"max_targets {self.max_targets} exceeds num_queries {num_queries}: "
                             "Hungarian matching needs at most one target per query")
        if class_weight is not None and len(class_weight) != num_classes:
            raise ValueError(f"class_weight has {len(class_weight)} values, expected num_classes={num_classes}")
        self.num_classes, self.num_queries = num_classes, num_queries
        self.no_object_weight, self.mask_weight, self.dice_weight = no_object_weight, mask_weight, dice_weight
        self.ce_weight, self.class_cost_weight = ce_weight, class_cost_weight
        self.focal_alpha, self.focal_gamma, self.matcher = focal_alpha, focal_gamma, matcher
        self.ignore_index, self.name = ignore_index, name
        self.compact_targets = (matcher == "scipy") if compact_targets is None else bool(compact_targets)
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]

    # ------------------------------------------------------------------ pieces

    def matching_costs(self, class_logits, mask_logits, small_masks, classes):
        """(L, B, Q, T) float32 matching costs for L outputs of one batch.

        class_logits (L, B, Q, K+1); mask_logits (L, B, h, w, Q); small_masks (B, h * w, T)
        the target masks at the prediction's resolution; classes (B, T).
        """
        probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)
        n_out = tf.shape(probs)[0]
        tiled = tf.broadcast_to(classes[None], tf.concat([[n_out], tf.shape(classes)], 0))
        cost_class = -tf.gather(probs, tiled, axis=3, batch_dims=2)  # (L, B, Q, T)
        shape = tf.shape(mask_logits)
        logits = tf.reshape(tf.cast(mask_logits, tf.float32), (shape[0], shape[1], shape[2] * shape[3], shape[4]))
        focal, dice = pairwise_mask_costs(logits, small_masks, self.focal_alpha, self.focal_gamma)
        return self.class_cost_weight * cost_class + self.mask_weight * focal + self.dice_weight * dice

    def _class_weights(self):
        w = self.class_weight if self.class_weight is not None else [1.0] * self.num_classes
        return tf.constant(list(w) + [self.no_object_weight], tf.float32)

    def layer_loss(self, class_logits, mask_logits, labels, classes, valid, assign, num_masks):
        """The loss of one decoder output given its matching ``assign`` (B, T) (-1: none)."""
        q = tf.shape(class_logits)[1]
        onehot = tf.one_hot(assign, q, dtype=tf.float32)  # (B, T, Q); rows of -1 are zero
        matched = tf.reduce_sum(onehot, axis=1) > 0  # (B, Q)
        matched_class = tf.cast(tf.einsum("btq,bt->bq", onehot, tf.cast(classes, tf.float32)), tf.int32)
        target = tf.where(matched, matched_class, self.num_classes)
        logits = tf.cast(class_logits, tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        w = tf.gather(self._class_weights(), target)
        loss_ce = tf.reduce_sum(w * ce) / tf.maximum(tf.reduce_sum(w), 1e-12)

        if self.compact_targets:
            focal, dice = self._mask_losses_compact(mask_logits, labels, classes, valid, assign)
        else:
            focal, dice = self._mask_losses_padded(mask_logits, labels, classes, valid, assign)
        return self.ce_weight * loss_ce + (self.mask_weight * focal + self.dice_weight * dice) / num_masks

    def _mask_losses_padded(self, mask_logits, labels, classes, valid, assign):
        """Summed focal and dice over the T padded targets (static shapes, XLA-friendly)."""
        pred = tf.gather(tf.cast(mask_logits, tf.float32), tf.maximum(assign, 0), axis=3, batch_dims=1)
        pred = tf.image.resize(pred, tf.shape(labels)[1:3], method="bilinear")  # (B, H, W, T)
        target_masks = _target_masks(labels, classes)
        b, t = tf.shape(pred)[0], tf.shape(pred)[3]
        pred = tf.reshape(tf.transpose(pred, (0, 3, 1, 2)), (b, t, -1))
        target_masks = tf.reshape(tf.transpose(target_masks, (0, 3, 1, 2)), (b, t, -1))
        weight = tf.cast(valid, tf.float32)
        focal = tf.reduce_sum(sigmoid_focal_loss(pred, target_masks, self.focal_alpha, self.focal_gamma) * weight)
        dice = tf.reduce_sum(dice_loss(pred, target_masks) * weight)
        return focal, dice

    def _mask_losses_compact(self, mask_logits, labels, classes, valid, assign):
        """Summed focal and dice over the valid targets only, gathered into a dynamic-size
        (N, H, W) batch: the full-resolution tensors hold N (~8 per ADE20K image) masks
        instead of B x T."""
        idx = tf.where(valid)  # (N, 2): image, target slot
        image = tf.cast(idx[:, 0], tf.int32)
        query = tf.gather_nd(assign, idx)
        pred = tf.gather_nd(tf.transpose(tf.cast(mask_logits, tf.float32), (0, 3, 1, 2)),
                            tf.stack([image, query], axis=1))  # (N, h, w)
        pred = tf.image.resize(pred[..., None], tf.shape(labels)[1:3], method="bilinear")[..., 0]
        target = tf.cast(tf.equal(tf.gather(labels, image), tf.gather_nd(classes, idx)[:, None, None]), tf.float32)
        n = tf.shape(pred)[0]
        pred, target = tf.reshape(pred, (n, -1)), tf.reshape(target, (n, -1))
        focal = tf.reduce_sum(sigmoid_focal_loss(pred, target, self.focal_alpha, self.focal_gamma))
        return focal, tf.reduce_sum(dice_loss(pred, target))

    def num_masks(self, valid):
        """max(1, valid targets summed over replicas / replicas) as float32 (authors)."""
        local = tf.reduce_sum(tf.cast(valid, tf.float32))
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            local = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local) / ctx.num_replicas_in_sync
        return tf.maximum(local, 1.0)

    def match_outputs(self, outputs, labels, classes, valid):
        """Hungarian matching of every output in ``outputs`` (a list of dicts) at once.

        Returns a list of (B, T) int32 assignments (prediction per target, -1 for padding).
        """
        n_out = len(outputs)
        class_logits = tf.stack([o["class_logits"] for o in outputs], axis=0)
        mask_logits = tf.stack([o["mask_logits"] for o in outputs], axis=0)
        size = tf.shape(outputs[0]["mask_logits"])[1:3]
        small = torch_nearest_resize(tf.cast(labels, tf.int32)[..., None], size)[..., 0]
        small = _target_masks(small, classes)
        small = tf.reshape(small, (tf.shape(small)[0], -1, self.max_targets))
        cost = self.matching_costs(class_logits, mask_logits, small, classes)  # (L, B, Q, T)
        flat = tf.reshape(cost, tf.concat([[-1], tf.shape(cost)[2:]], 0))
        flat.set_shape([None, cost.shape[2], self.max_targets])
        assign = match(flat, tf.concat([valid] * n_out, axis=0), self.matcher)
        return tf.split(assign, n_out, axis=0) if n_out > 1 else [assign]

    # ------------------------------------------------------------------ the loss

    def __call__(self, y_true, y_pred):
        labels = tf.cast(y_true, tf.int32)
        if labels.shape.rank == 4:
            labels = labels[..., 0]
        outputs = [y_pred] + list(y_pred.get("aux_outputs") or [])
        outputs = [{"class_logits": o["class_logits"], "mask_logits": o["mask_logits"]} for o in outputs]
        q = outputs[0]["class_logits"].shape[1]
        if q is not None and q < self.max_targets:
            raise ValueError(f"the model has {q} queries but the criterion pads targets to "
                             f"max_targets={self.max_targets}; pass max_targets <= {q}")
        classes, valid = semantic_targets(labels, self.num_classes, self.max_targets, self.ignore_index)
        num_masks = self.num_masks(valid)
        assigns = self.match_outputs(outputs, labels, classes, valid)
        losses = [self.layer_loss(o["class_logits"], o["mask_logits"], labels, classes, valid, a, num_masks)
                  for o, a in zip(outputs, assigns)]
        return tf.add_n(losses)

    def get_config(self):
        return {
            "num_classes": self.num_classes, "num_queries": self.num_queries,
            "no_object_weight": self.no_object_weight, "mask_weight": self.mask_weight,
            "dice_weight": self.dice_weight, "ce_weight": self.ce_weight,
            "class_cost_weight": self.class_cost_weight, "focal_alpha": self.focal_alpha,
            "focal_gamma": self.focal_gamma, "matcher": self.matcher, "max_targets": self.max_targets,
            "ignore_index": self.ignore_index, "class_weight": self.class_weight,
            "compact_targets": self.compact_targets, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
