"""Callbacks of a kseg training run: periodic evaluation with best/last checkpoints and
TensorBoard scalars and overlays, crash-safe backups and a NaN guard (progress and train
scalars: :mod:`kseg.training.monitor`). Under multi-worker training every worker runs them (evaluation is a
collective), only the chief writes files."""

import json
import logging
import math
import os
import time

import keras
import numpy as np

from kseg.training.monitor import write_evaluation

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
                 eval_interval, max_steps, num_overlays=4, writer=None, chief=True, guard=None):
        super().__init__()
        self.chief, self.guard = chief, guard
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
        if self.guard is not None and self.guard.bad_step is not None:
            return  # never evaluate or save the weights of a non-finite step
        from kseg.inference import save_results, side_by_side
        from kseg.training.evaluation import evaluate_distributed

        strips = []

        def collect(image, label, pred):
            if len(strips) < self.num_overlays:
                strips.append(side_by_side(image, pred, label, self.palette))

        start = time.time()
        summary = evaluate_distributed(self.model, self.val_ds, self.num_classes, self.eval_cfg,
                                       strategy=self.model.distribute_strategy,
                                       class_names=self.class_names, progress=True, on_image=collect)
        summary["step"] = step
        summary["eval_seconds"] = round(time.time() - start, 1)
        improved = summary["mIoU"] > self.best["mIoU"]
        if improved:
            self.best = {"mIoU": summary["mIoU"], "step": step}
        if self.chief:
            save_results(summary, os.path.join(self.work_dir, "eval", f"step_{step}.json"))
            _save_weights_atomic(self.model, self.last_path)
            if improved:
                _save_weights_atomic(self.model, self.best_path)
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
        if self.writer is not None and self.chief:
            write_evaluation(self.writer, step, summary, np.stack(_same_size(strips)) if strips else None)


def _same_size(strips):
    """Crops strips to the smallest height/width so they stack into one image batch."""
    h = min(s.shape[0] for s in strips)
    w = min(s.shape[1] for s in strips)
    return [s[:h, :w] for s in strips]


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss with a clear message.

    The weights of the bad step are not saved: :class:`EvaluationCallback` and
    :class:`SafeBackupAndRestore` given this guard skip their epoch-end saves once it has
    tripped, so the last good checkpoint and backup stay on disk (put the guard first in
    the callback list: its ``on_train_end`` raises before the backup would be deleted).
    Raises FloatingPointError after stopping, so the run exits non-zero.
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


def _save_weights_atomic(model, path):
    """``model.save_weights(path)`` through a temporary file and ``os.replace``: a run
    killed while writing leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    model.save_weights(tmp, overwrite=True)
    os.replace(tmp, path)


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` (at epoch ends, kseg epochs being ``steps_per_epoch`` steps)
    made safe against ``kill -9`` and NaNs and usable by several workers:

    - weights and metadata are written to temporary files and renamed, so a kill during
      a save leaves the previous backup whole;
    - on restore the epoch to continue from is read from the optimizer's step counter in
      the restored weights (what the schedule uses), not only from the metadata file;
    - nothing is saved once ``guard`` (a :class:`NonFiniteLossGuard`) has tripped, and the
      backup is kept when training ends on a NaN;
    - only the chief (``chief=True``) writes or deletes; every worker restores from the
      same (shared) folder.

    ``restored_step`` holds the step the run resumed at (0 for a fresh run).
    """

    def __init__(self, backup_dir, steps_per_epoch, chief=True, guard=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=True)
        self.steps_per_epoch, self.chief, self.guard = int(steps_per_epoch), chief, guard
        self.restored_step = 0

    def _load_model(self):
        super()._load_model()
        if os.path.exists(self._weights_path):
            self.restored_step = _step(self.model)
            self.model._initial_epoch = self.restored_step // self.steps_per_epoch

    def _tripped(self):
        return self.guard is not None and self.guard.bad_step is not None

    def on_epoch_end(self, epoch, logs=None):
        if self._tripped():
            return
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        if not self.chief:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        _save_weights_atomic(self.model, self._weights_path)
        tmp = self._training_metadata_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen,
                       "step": _step(self.model)}, f)
        os.replace(tmp, self._training_metadata_path)

    def on_train_end(self, logs=None):
        if self.chief and not self._tripped():
            super().on_train_end(logs)
