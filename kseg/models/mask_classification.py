"""A Segmentor base for mask-classification models (MaskFormer, SegViT).

Design (DESIGN.md "Conventions"): ``forward(x, training)`` returns a dict

- ``class_logits``: (B, Q, K+1) float32, the last class being "no object";
- ``mask_logits``: (B, h, w, Q) float32 at the head's mask stride;
- ``aux_outputs``: a list of ``{"class_logits", "mask_logits"}`` dicts, one per earlier
  decoder layer / ATM group (deep supervision); ``call`` keeps it only when training.

``semantic_logits(outputs)`` turns the dict into per-pixel scores (B, h, w, K)
(:func:`kseg.inference.semantic.semantic_inference`), which kseg.inference, evaluation,
metrics and export use, so every per-pixel tool works unchanged.

Training goes through ``compute_loss``: the compiled ``criterion`` (the family's set
criterion, default from :meth:`default_loss`) maps ``(labels (B, H, W) int32, outputs)``
to a scalar; ``model.compile(); model.fit(...)`` therefore trains these models like any
other Keras model.
"""

from kseg.inference.semantic import semantic_inference
from kseg.models.segmentor import Segmentor


class MaskClassificationSegmentor(Segmentor):
    """Subclasses implement ``forward`` (see module docstring) and ``default_loss``
    (their criterion: ``criterion(labels, outputs) -> float32 scalar``: the summed
    per-mask losses of one replica's batch divided by the mean number of target masks per
    replica, i.e. the all-reduced total / replicas, as DETR and MaskFormer do)."""

    def call(self, images, training=None):
        outputs = dict(self.forward(self.normalize(images), training=training))
        if not training:
            outputs.pop("aux_outputs", None)
        return outputs

    def semantic_logits(self, outputs):
        """(B, h, w, K) float32 class scores of ``outputs`` (a dict from ``call``)."""
        return semantic_inference(outputs["class_logits"], outputs["mask_logits"])

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """As :meth:`Segmentor.compile`; ``loss`` is a set criterion
        ``criterion(labels, outputs)`` (default: the family's :meth:`default_loss`), a
        registered Keras-serialisable object so ``.keras`` files keep it. Keras stores it
        as ``self.loss``; only :meth:`compute_loss` calls it."""
        super().compile(optimizer=optimizer, loss=loss if loss is not None else self.default_loss(),
                        metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if sample_weight is not None:
            raise ValueError("mask-classification criteria take no sample_weight; weight classes "
                             "through the criterion instead")
        if y is None or y_pred is None:
            return None
        from keras.src.losses.loss import scale_loss_for_distribution

        # Keras sums replica gradients, so scale by 1/replicas as its own losses do. With the
        # criterion's per-replica mean mask count this gives sum(losses) / total masks.
        total = scale_loss_for_distribution(self.loss(y, y_pred))
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, self.semantic_logits(y_pred), sample_weight=sample_weight)
