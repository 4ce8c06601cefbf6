"""The base class of every kseg model: input normalisation, variants, compile defaults."""

import keras
import tensorflow as tf
from keras import ops

from kseg.backbones.normalization import IMAGENET_MEAN, IMAGENET_STD
from kseg.models.registry import variant_spec


def _stats(name, values):
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} must give 3 values (R, G, B in pixel units 0..255), got {list(values)}")
    return values


class Segmentor(keras.Model):
    """A segmentation model taking raw RGB pixels.

    Input: images (B, H, W, 3), float32 in [0, 255] or uint8 (cast), any H and W.
    Normalisation with the family's mean/std happens inside the graph, so exported
    artifacts take raw pixels. Subclasses set ``mean``/``std`` and implement
    ``forward(normalised_images, training)``.

    Every subclass offers ``from_variant``, ``compile()`` with the family's defaults,
    ``get_config``/``from_config`` and ``.keras`` / ``.weights.h5`` saving.

    Args:
      mean, std: per-channel RGB statistics in pixel units (3 floats each) replacing the
        family's defaults. Normalisation belongs to the weights (timm's ``_cfg(mean=, std=)``):
        a checkpoint trained with other statistics (e.g. SETR's ImageNet mean/std on ViT
        weights) brings its own, and they are saved in ``get_config``.
    Raises: ValueError for statistics that are not 3 numbers or a std that is not > 0.
    """

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    # Regex fully matching ``variable.path`` of the decode-head variables (for lr_mult).
    head_path_pattern = None

    def __init__(self, mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        self.mean_override = _stats("mean", mean)
        self.std_override = _stats("std", std)
        if self.std_override and min(self.std_override) <= 0:
            raise ValueError(f"std must be > 0 in every channel, got {list(self.std_override)}")

    @property
    def pixel_mean(self):
        """The (3,) mean used by :meth:`normalize`: the override, else the family's."""
        return self.mean_override or tuple(self.mean)

    @property
    def pixel_std(self):
        """The (3,) std used by :meth:`normalize`: the override, else the family's."""
        return self.std_override or tuple(self.std)

    def normalization_config(self):
        """``{"mean": [...] or None, "std": [...] or None}`` for subclasses' ``get_config``."""
        return {"mean": list(self.mean_override) if self.mean_override else None,
                "std": list(self.std_override) if self.std_override else None}

    @classmethod
    def from_variant(cls, name, num_classes, **overrides):
        """Builds the registered variant ``name`` with ``num_classes`` classes.

        ``overrides`` replace entries of the variant table (e.g. ``drop_path_rate=0``).
        Raises: KeyError for unknown variants; TypeError for unknown override keys.
        """
        model_cls, kwargs = variant_spec(name)
        if not issubclass(model_cls, cls):
            raise KeyError(f"variant {name!r} belongs to {model_cls.__name__}, not {cls.__name__}")
        return model_cls(num_classes=num_classes, variant=name, **{**kwargs, **overrides})

    @classmethod
    def from_pretrained(cls, name_or_path, num_classes=None, **kwargs):
        """``kseg.from_pretrained`` restricted to this family (``SegFormer.from_pretrained(...)``).

        Raises: TypeError when the weights build another family's model; see
        :func:`kseg.pretrained.from_pretrained` for the rest.
        """
        from kseg.pretrained import from_pretrained

        model = from_pretrained(name_or_path, num_classes=num_classes, **kwargs)
        if not isinstance(model, cls):
            raise TypeError(f"{name_or_path!r} holds a {type(model).__name__} ({model.variant}), not a {cls.__name__}; "
                            f"use {type(model).__name__}.from_pretrained or kseg.from_pretrained")
        return model

    def normalize(self, images):
        x = ops.cast(images, "float32")
        mean = ops.convert_to_tensor(self.pixel_mean, "float32")
        std = ops.convert_to_tensor(self.pixel_std, "float32")
        # (x - mean) / std on rows of W pixels (B*H, W*3) against the statistics repeated W
        # times: the same values, but a broadcast along rows vectorises where one over a
        # 3-wide last axis does not (5x faster on CPU; 20 ms of a B0 train step at 512).
        shape = tf.shape(x)
        rows = tf.reshape(x, tf.stack([-1, shape[2] * 3]))
        rows = (rows - tf.tile(mean, shape[2:3])) / tf.tile(std, shape[2:3])
        return ops.cast(tf.reshape(rows, shape), self.compute_dtype)

    def call(self, images, training=None):
        return self.forward(self.normalize(images), training=training)

    def compile(self, optimizer=None, loss=None, metrics=None, optim=None, schedule=None,
                max_steps=160000, **kwargs):
        """Compiles with the family's defaults where an argument is None.

        Defaults: the model's loss with ignore index 255; AdamW (lr, weight decay, head
        lr multiplier and warmup+poly schedule from ``optim``/``schedule``, which default
        to the paper's ``kseg.config.OptimConfig``/``ScheduleConfig``) over ``max_steps``;
        an mIoU metric over ``num_classes``.
        """
        from kseg.config import OptimConfig, ScheduleConfig
        from kseg.training.optimizer import build_optimizer

        if optimizer is None:
            optimizer = build_optimizer(
                optim or OptimConfig(), schedule or ScheduleConfig(), max_steps, self.head_path_pattern
            )
        if loss is None:
            loss = self.default_loss()
        if metrics is None:
            from kseg.metrics import SegMeanIoU

            metrics = [SegMeanIoU(self.num_classes, name="mIoU")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Restores the compiled state saved in a ``.keras`` file (optimizer with its param
        groups, loss, metrics): the saved objects are used as they are, no defaults."""
        from keras.src.saving import serialization_lib

        super().compile(**serialization_lib.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def predict_labels(self, images, return_probs=False, **settings):
        """Class labels (and probabilities) at the input size, in one call.

        ``images``: one RGB image [H, W, 3], a batch [B, H, W, 3] (uint8 or float in
        [0, 255]) or a list of images of different sizes. ``settings``: ``mode`` ("whole"
        (default), "slide", "ms_flip"), ``scale``, ``crop_size``, ``stride``, ``ms_ratios``,
        ``ms_flip``... Returns numpy int32 labels [H, W] / [B, H, W] (and float32
        probabilities [..., K] with ``return_probs``). A thin delegation to
        :func:`kseg.inference.predict_images`, where the details are.
        """
        from kseg.inference import predict_images

        return predict_images(self, images, return_probs=return_probs, **settings)

    def default_loss(self, class_weight=None):
        """The family's training loss: per-pixel cross-entropy, ignore index 255."""
        from kseg.losses import SegCrossEntropy

        return SegCrossEntropy(ignore_index=255, class_weight=class_weight)
