"""A Segmentor base for models trained with auxiliary (deeply supervised) outputs.

Design: ``forward`` returns ``(main_logits, [aux_logits, ...])``. ``call`` returns

- the main logits (a tensor) at inference (``training`` falsy): ``model(images)``,
  ``model.predict``, ``evaluate``, kseg.inference and export see a plain per-pixel model;
- ``{"logits": main, "aux": [aux_1, ...]}`` when ``training=True`` and the model has
  auxiliary heads.

``compute_loss`` adds ``sum_i aux_loss_weights[i] * loss(y, aux_i)`` to the compiled loss
of the main logits, using the *same* compiled loss (any per-pixel loss the user passes to
``compile``, resizing its logits to the labels), so ``model.compile(); model.fit(...)``
trains all heads through Keras' generic train step; ``compute_metrics`` reads only the
main logits. A custom training loop can do the same by calling ``model(x, training=True)``
and :meth:`total_loss`.
"""

from kseg.models.segmentor import Segmentor


class DeepSupervisedSegmentor(Segmentor):
    """Subclasses set ``self.aux_loss_weights`` (one float per auxiliary output) and
    implement ``forward(x, training) -> (main, aux_list)``."""

    aux_loss_weights = ()

    def call(self, images, training=None):
        main, aux = self.forward(self.normalize(images), training=training)
        if training and aux:
            return {"logits": main, "aux": list(aux)}
        return main

    def total_loss(self, loss_fn, y, outputs, sample_weight=None):
        """``loss_fn(y, main) + sum_i w_i * loss_fn(y, aux_i)`` for ``outputs`` of ``call``."""
        if not isinstance(outputs, dict):
            return loss_fn(y, outputs, sample_weight)
        total = loss_fn(y, outputs["logits"], sample_weight)
        for w, aux in zip(self.aux_loss_weights, outputs["aux"]):
            total = total + w * loss_fn(y, aux, sample_weight)
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        total = super().compute_loss(x=x, y=y, y_pred=y_pred["logits"], sample_weight=sample_weight,
                                     training=training)
        # The compiled loss (Keras' CompileLoss, the path the main loss took above) applied
        # to each auxiliary output: same reduction and distribution scaling.
        for w, aux in zip(self.aux_loss_weights, y_pred["aux"]):
            total = total + w * self._compile_loss(y, aux, sample_weight)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
