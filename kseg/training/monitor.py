"""What a training run shows and logs: console progress and TensorBoard scalars, both
against the optimizer step.

:class:`TrainMonitor` is the one callback that reports the training loop:

- the console (through :mod:`kseg.utils.progress`): one line after the first step (which
  includes tracing and compiling), then every ``log_interval`` steps and at the last step,
  as mmseg's logger does; on a terminal also a live bar below them (step, latest loss,
  elapsed time, ETA)::

      step 100/2800 loss 1.2345 lr 9.71e-04 (0.452 s/step, data 0.003 s, eta 20:21)

- TensorBoard (``tensorboard/train``), at the same steps: ``train/loss``, ``train/lr``
  (``train/lr_group<i>`` for further parameter groups), ``train/time`` and
  ``train/data_time`` (seconds per step). The learning rate of step N is the one step N
  used (mmseg logs it so too), not the one the schedule gives the next step.

:func:`write_evaluation` writes the evaluation scalars and overlays
(``tensorboard/val``: ``val/mIoU``, ``val/aAcc``, ``val/mAcc`` in percent, ``val/overlays``).

Every write runs under ``tf.summary.record_if(True)``: Keras' own TensorBoard callback, if
a user adds it, leaves ``record_if(step % update_freq == 0)`` set around epoch ends, which
would otherwise drop kseg's writes at steps off that grid.

Definitions (mmengine's ``IterTimerHook`` / ``LoggerHook``): ``loss`` is the mean of the
per-step losses since the previous log step; ``time`` the mean wall time of those steps
(input wait + forward/backward/update); ``data_time`` the part spent waiting for the
input pipeline; ETA = remaining steps x the mean step time since the second step of this
run (evaluations not included).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from kseg.training.optimizer import optimizer_learning_rates
from kseg.utils.progress import ProgressTask, format_seconds


def _step(model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _scalar(value) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(value)).reshape(-1)[0])


class TrainMonitor(keras.callbacks.Callback):
    """Console progress and TensorBoard training scalars every ``log_interval`` steps.

    Args:
      log_interval: optimizer steps between console lines / TensorBoard points (also the
        window of the logged means); the last step is always logged.
      max_steps: the run's last optimizer step (the bar's total and the ETA).
      writer: ``tf.summary`` writer for the train scalars (None: console only, e.g. on
        non-chief workers).

    Data time is measured by fetching each batch eagerly before Keras' compiled step
    (the step itself is unchanged); with ``steps_per_execution > 1`` Keras fetches inside
    its compiled loop and data time is not shown.
    """

    def __init__(self, log_interval: int, max_steps: int, writer=None):
        super().__init__()
        self.interval, self.max_steps, self.writer = max(1, int(log_interval)), int(max_steps), writer
        self._bar = None
        self._inner_train_function = None

    # -- input timing ------------------------------------------------------------------
    def _time_input(self):
        """Wraps ``model.train_function`` (built by ``fit`` before ``on_train_begin``) so
        that the batch is fetched here, timed, and handed to Keras' step as a one-element
        list (Keras' trainer runs one compiled step per element of a non-iterator)."""
        model = self.model
        inner = getattr(model, "train_function", None)
        if inner is None or getattr(model, "steps_per_execution", 1) != 1:
            return
        monitor = self

        def timed_train_function(iterator):
            if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
                start = time.perf_counter()
                batch = next(iterator)  # StopIteration ends the epoch, as inside Keras
                monitor._data += time.perf_counter() - start
                iterator = [batch]
            return inner(iterator)

        self._inner_train_function = inner
        model.train_function = timed_train_function

    # -- callback hooks ----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._time_input()
        self.start_step = self._last_step = _step(self.model)
        self._data = self._data_window = self._time_window = self._loss_window = 0.0
        self._steps_window = 0
        self._timed_steps, self._timed_seconds = 0, 0.0  # for the ETA, first step excluded
        self._epoch_sum = 0.0
        self._lrs = optimizer_learning_rates(self.model.optimizer)
        self._bar = ProgressTask("train", self.max_steps, "steps", line_every=None, min_seconds=None)
        self._bar.update(self.start_step, info="compiling")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_sum = 0.0  # Keras resets its loss mean per epoch

    def on_train_batch_begin(self, batch, logs=None):
        # The learning rate the coming step uses (the optimizer reads its schedule at the
        # current step count), read only when that step will be logged.
        upcoming = self._last_step + getattr(self.model, "steps_per_execution", 1)
        if upcoming % self.interval == 0 or upcoming >= self.max_steps or upcoming == self.start_step + 1:
            self._lrs = optimizer_learning_rates(self.model.optimizer)
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self._batch_start
        step = _step(self.model)
        steps = max(step - self._last_step, 1)
        self._last_step = step
        # Keras logs the running mean of the epoch: recover the sum of this call's losses.
        mean = _scalar((logs or {}).get("loss", np.nan))
        loss_sum = mean * (batch + 1) - self._epoch_sum
        self._epoch_sum = mean * (batch + 1)
        self._loss_window += loss_sum
        self._time_window += seconds
        self._data_window += self._data
        self._data = 0.0
        self._steps_window += steps
        if step - self.start_step > steps:  # skip the first call (tracing, compilation)
            self._timed_steps += steps
            self._timed_seconds += seconds
        eta = (self._timed_seconds / self._timed_steps * (self.max_steps - step)
               if self._timed_steps else None)
        log_step = step % self.interval == 0 or step >= self.max_steps
        first = step - self.start_step == steps  # shown at once: it includes tracing
        if not (log_step or first):
            self._bar.update(step, eta=eta)
            return
        n = self._steps_window
        loss, step_time = self._loss_window / n, self._time_window / n
        data_time = self._data_window / n if self._inner_train_function is not None else None
        lrs = self._lrs
        timing = f"{step_time:.3f} s/step" + ("" if data_time is None else f", data {data_time:.3f} s")
        self._bar.update(step, eta=eta, info=f"loss {loss:.4f}")
        self._bar.print_line(f"step {step}/{self.max_steps} loss {loss:.4f} lr {lrs[0]:.2e} ("
                             f"{timing}, eta {format_seconds(eta)})"
                             + (" first step, incl. compiling" if first else ""))
        if not log_step:
            return
        if self.writer is not None:
            with self.writer.as_default(step=step), tf.summary.record_if(True):
                tf.summary.scalar("train/loss", loss)
                for i, lr in enumerate(lrs):
                    tf.summary.scalar("train/lr" if i == 0 else f"train/lr_group{i}", lr)
                tf.summary.scalar("train/time", step_time)
                if data_time is not None:
                    tf.summary.scalar("train/data_time", data_time)
        self._loss_window = self._time_window = self._data_window = 0.0
        self._steps_window = 0

    def on_train_end(self, logs=None):
        if self._inner_train_function is not None:
            self.model.train_function = self._inner_train_function
            self._inner_train_function = None
        if self._bar is not None:
            self._bar.close()
        if self.writer is not None:
            self.writer.flush()


def write_evaluation(writer, step: int, summary: dict, overlays=None) -> None:
    """Writes one evaluation to TensorBoard at optimizer step ``step``.

    Args:
      writer: ``tf.summary`` writer of the val run.
      summary: :func:`kseg.inference.evaluate` result (aAcc, mIoU, mAcc in percent).
      overlays: optional uint8 [N, H, W, 3] image | prediction | ground-truth strips.
    """
    with writer.as_default(step=step), tf.summary.record_if(True):
        for key in ("mIoU", "aAcc", "mAcc"):
            tf.summary.scalar(f"val/{key}", summary[key])
        if overlays is not None and len(overlays):
            tf.summary.image("val/overlays", overlays, max_outputs=len(overlays))
    writer.flush()
