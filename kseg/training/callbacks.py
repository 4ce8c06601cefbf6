"""Callbacks of a kseg training run: periodic evaluation with best/last checkpoints,
learning-rate logging and TensorBoard overlays."""

import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from kseg.training.optimizer import optimizer_learning_rates

log = logging.getLogger("kseg.train")


def _step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluates on whole validation images every ``eval_interval`` optimizer steps.

    Writes ``eval/step_<N>.json`` (aAcc, mIoU, mAcc, per-class IoU/Acc, confusion matrix),
    TensorBoard scalars and ``num_overlays`` image | prediction | ground-truth strips,
    ``last.weights.h5`` after every evaluation and ``best.weights.h5`` when mIoU improves.
    Adds ``val_mIoU`` to the epoch logs.
    """

    def __init__(self, val_ds, eval_cfg, num_classes, class_names, palette, work_dir,
                 eval_interval, max_steps, num_overlays=4, writer=None):
        super().__init__()
        self.val_ds, self.eval_cfg, self.num_classes = val_ds, eval_cfg, num_classes
        self.class_names, self.palette, self.work_dir = class_names, palette, work_dir
        self.eval_interval, self.max_steps, self.num_overlays = eval_interval, max_steps, num_overlays
        self.writer = writer
        self.best_path = os.path.join(work_dir, "best.weights.h5")
        self.last_path = os.path.join(work_dir, "last.weights.h5")
        self.best = self._read_best()
        self.history = []

    def _read_best(self):
        path = os.path.join(self.work_dir, "eval", "best.json")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        return {"mIoU": -math.inf, "step": None}

    def on_epoch_end(self, epoch, logs=None):
        step = _step(self.model)
        if step % self.eval_interval and step < self.max_steps:
            return
        from kseg.inference import evaluate, save_results, side_by_side

        strips = []

        def collect(image, label, pred):
            if len(strips) < self.num_overlays:
                strips.append(side_by_side(image, pred, label, self.palette))

        start = time.time()
        summary = evaluate(self.model, self.val_ds, self.num_classes, self.eval_cfg,
                           class_names=self.class_names, progress=False, on_image=collect)
        summary["step"] = step
        summary["eval_seconds"] = round(time.time() - start, 1)
        save_results(summary, os.path.join(self.work_dir, "eval", f"step_{step}.json"))
        self.model.save_weights(self.last_path)
        improved = summary["mIoU"] > self.best["mIoU"]
        if improved:
            self.best = {"mIoU": summary["mIoU"], "step": step}
            self.model.save_weights(self.best_path)
            save_results(self.best, os.path.join(self.work_dir, "eval", "best.json"))
        self.history.append({"step": step, "mIoU": summary["mIoU"], "aAcc": summary["aAcc"]})
        print(
            f"\n[eval @ step {step}] mIoU {summary['mIoU']:.2f}  aAcc {summary['aAcc']:.2f}  "
            f"mAcc {summary['mAcc']:.2f}  ({summary['eval_seconds']}s)"
            + ("  * new best" if improved else f"  (best {self.best['mIoU']:.2f} @ {self.best['step']})"),
            flush=True,
        )
        if logs is not None:
            logs["val_mIoU"] = summary["mIoU"]
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for key in ("mIoU", "aAcc", "mAcc"):
                    tf.summary.scalar(f"val/{key}", summary[key])
                if strips:
                    tf.summary.image("val/overlays", np.stack(_same_size(strips)), max_outputs=len(strips))
            self.writer.flush()


def _same_size(strips):
    """Crops strips to the smallest height/width so they stack into one image batch."""
    h = min(s.shape[0] for s in strips)
    w = min(s.shape[1] for s in strips)
    return [s[:h, :w] for s in strips]


class LearningRateLogger(keras.callbacks.Callback):
    """Writes each sub-optimizer's learning rate to TensorBoard every ``interval`` steps."""

    def __init__(self, writer, interval):
        super().__init__()
        self.writer, self.interval = writer, max(1, interval)

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.interval:
            return
        with self.writer.as_default(step=step):
            for i, lr in enumerate(optimizer_learning_rates(self.model.optimizer)):
                tf.summary.scalar("train/lr" if i == 0 else f"train/lr_group{i}", lr)


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss with a clear message.

    The weights of the bad step are not saved: the last good checkpoint and backup stay
    on disk. Raises FloatingPointError after stopping, so the run exits non-zero.
    """

    def __init__(self):
        super().__init__()
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.bad_step = _step(self.model)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.bad_step is not None:
            raise FloatingPointError(
                f"non-finite loss at step {self.bad_step}: training stopped. The last good "
                "weights are the newest backup / last.weights.h5 in the work dir. Lower optim.lr, "
                "raise schedule.warmup_steps or use train.precision=float32, then --resume."
            )
