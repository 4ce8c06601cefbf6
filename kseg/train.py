"""``python -m kseg.train --recipe R [--set a.b=c ...] [--work-dir D] [--resume]
[--strategy auto|one_device|mirrored|multi_worker|tpu] [--cpu-replicas N]``.

Trains a model from a YAML recipe: tf.data pipeline, AdamW with parameter groups,
warmup + poly schedule, periodic whole-image evaluation (mIoU), best/last checkpoints,
crash-safe backups for ``--resume``, TensorBoard scalars and overlays; on one device,
several GPUs, a cluster (TF_CONFIG) or a TPU, in float32 or a mixed precision policy.

Work dir layout: ``recipe.yaml`` (resolved), ``best.weights.h5``, ``last.weights.h5``,
``eval/step_N.json``, ``tensorboard/``, ``summary.json``, ``backup/`` (while a run is
unfinished). Under multi-worker training only the chief writes them.
"""

import argparse
import json
import logging
import math
import os
import sys
import time

from kseg.config import load_recipe, save_recipe


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kseg.train", description=__doc__.split("\n\n")[1])
    p.add_argument("--recipe", required=True, help="recipe YAML, e.g. recipes/segformer_mit_b0_camvid.yaml")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe field (repeatable), e.g. --set train.max_steps=100")
    p.add_argument("--work-dir", help="output folder (default: train.work_dir or work_dirs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last backup")
    p.add_argument("--strategy", default="auto", choices=("auto", "one_device", "mirrored", "multi_worker", "tpu"),
                   help="tf.distribute strategy; auto: TPU if present, multi_worker if TF_CONFIG lists "
                        "several tasks, mirrored for >1 GPU (or --cpu-replicas > 1), else one device")
    p.add_argument("--cpu-replicas", type=int, default=0, metavar="N",
                   help="split the CPU into N logical devices (multi-replica training without a GPU)")
    return p.parse_args(argv)


def resolve_work_dir(recipe, recipe_path, work_dir=None):
    if work_dir:
        return work_dir
    if recipe.train.work_dir:
        return recipe.train.work_dir
    return os.path.join("work_dirs", os.path.splitext(os.path.basename(recipe_path))[0])


def chunk_steps(train_cfg):
    """Steps per Keras epoch: every eval and backup boundary falls on an epoch end, so
    ``BackupAndRestore`` (which restores at epoch granularity) resumes exactly."""
    return math.gcd(math.gcd(train_cfg.eval_interval, train_cfg.backup_interval), train_cfg.max_steps)


def run(recipe, work_dir, resume=False, strategy="auto", cpu_replicas=0):
    """Trains ``recipe`` into ``work_dir``; returns a summary dict.

    Raises SystemExit with a one-line reason for bad input (recipe, dataset, batch split,
    checkpoint), FloatingPointError on a non-finite loss (after keeping the last good
    backup and checkpoints).
    """
    from kseg.training.strategy import build_strategy, describe, is_chief, per_replica_batch, prebuild_for_fit

    strategy = build_strategy(strategy, cpu_replicas)  # before TensorFlow runs any op
    import keras
    import tensorflow as tf

    from kseg.data import build_dataset, get_dataset
    from kseg.models import build_from_recipe
    from kseg.training.callbacks import (
        EvaluationCallback,
        NonFiniteLossGuard,
        SafeBackupAndRestore,
        _save_weights_atomic,
    )
    from kseg.training.monitor import TrainMonitor
    from kseg.training.precision import set_precision
    from kseg.training.train_step import install_train_step

    t = recipe.train
    chief = is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    micro = per_replica_batch(t.global_batch_size, replicas, t.accumulate_steps)
    backup_dir = os.path.join(work_dir, "backup")
    if os.path.isdir(backup_dir) and not resume:
        raise SystemExit(
            f"{work_dir} holds an unfinished run ({backup_dir}). Pass --resume to continue it, "
            "or choose another --work-dir."
        )
    if chief:
        os.makedirs(work_dir, exist_ok=True)
        save_recipe(recipe, os.path.join(work_dir, "recipe.yaml"))
    keras.utils.set_random_seed(t.seed)
    set_precision(t.precision)

    steps = chunk_steps(t)
    start_step = _backup_step(backup_dir, steps) if resume else 0
    val_info = get_dataset(recipe.data.dataset, root=recipe.data.root, split=recipe.data.val_split,
                           reduce_zero_label=recipe.data.reduce_zero_label, folder_spec=recipe.data.folder_spec,
                           skip_bad_samples=recipe.data.skip_bad_samples)
    info = val_info
    if recipe.model.num_classes != info.num_classes:
        raise SystemExit(
            f"model.num_classes is {recipe.model.num_classes} but dataset '{info.name}' has "
            f"{info.num_classes} classes: set model.num_classes={info.num_classes}"
        )
    train_info = get_dataset(recipe.data.dataset, root=recipe.data.root, split=recipe.data.train_split,
                             reduce_zero_label=recipe.data.reduce_zero_label, folder_spec=recipe.data.folder_spec,
                             skip_bad_samples=recipe.data.skip_bad_samples)
    # A resumed run draws fresh augmentation seeds instead of replaying the first batches.
    train_ds = build_dataset(recipe.data, split=recipe.data.train_split, training=True,
                             batch_size=t.global_batch_size, seed=t.seed + start_step, info=train_info)
    val_ds = build_dataset(recipe.data, split=recipe.data.val_split, training=False,
                           batch_size=recipe.eval.batch_size, info=val_info)

    if recipe.model.class_weight and len(recipe.model.class_weight) != info.num_classes:
        raise SystemExit(f"model.class_weight has {len(recipe.model.class_weight)} values; "
                         f"dataset '{info.name}' has {info.num_classes} classes")
    with strategy.scope():
        model = build_from_recipe(recipe)
        model.compile(optim=recipe.optim, loss=model.default_loss(recipe.model.class_weight),
                      schedule=recipe.schedule, max_steps=t.max_steps,
                      steps_per_execution=t.steps_per_execution, jit_compile=t.jit_compile)
        install_train_step(model, t.accumulate_steps)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        prebuild_for_fit(model, strategy, train_ds)
    # tensorboard/train and tensorboard/val: every scalar against the optimizer step.
    writers = {run: tf.summary.create_file_writer(os.path.join(work_dir, "tensorboard", run)) if chief else None
               for run in ("train", "val")}
    guard = NonFiniteLossGuard()
    backup = SafeBackupAndRestore(backup_dir, steps, chief=chief, guard=guard)
    evaluator = EvaluationCallback(
        val_ds, recipe.eval, info.num_classes, info.classes, info.palette, work_dir,
        t.eval_interval, t.max_steps, t.num_overlays, writers["val"], chief=chief, guard=guard,
    )
    callbacks = [guard, backup, TrainMonitor(t.log_interval, t.max_steps, writers["train"]), evaluator]
    epochs = t.max_steps // steps
    print(f"kseg.train: {model.variant} ({model.count_params() / 1e6:.2f} M params) on "
          f"{info.name}, {t.max_steps} steps x batch {t.global_batch_size} ({describe(strategy)}, "
          f"{micro} per replica x {t.accumulate_steps} micro-batch(es)), {t.precision}, crop "
          f"{recipe.data.crop_size[0]}x{recipe.data.crop_size[1]}, eval every {t.eval_interval}; "
          f"work dir {work_dir}" + (f"; resuming at step {start_step}" if start_step else ""), flush=True)
    start = time.time()
    try:
        # shuffle=False: the pipeline shuffles (Keras would warn that it ignores shuffle=True).
        model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=0,
                  shuffle=False)
    except tf.errors.OpError as e:
        reason = _input_error(e)
        if reason is None:
            raise
        raise SystemExit(f"kseg.train: bad input: {reason}") from None
    elapsed = time.time() - start
    if chief:
        _save_weights_atomic(model, os.path.join(work_dir, "last.weights.h5"))
    bad = sorted({p for p, _ in train_info.bad_samples} | {p for p, _ in val_info.bad_samples})
    summary = {
        "variant": model.variant,
        "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "resumed_at": backup.restored_step,
        "global_batch_size": t.global_batch_size,
        "replicas": replicas,
        "accumulate_steps": t.accumulate_steps,
        "precision": t.precision,
        "crop_size": list(recipe.data.crop_size),
        "train_seconds": round(elapsed, 1),
        "best": evaluator.best,
        "evaluations": evaluator.history,
        "skipped_bad_samples": bad,
    }
    if chief:
        with open(os.path.join(work_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    if os.environ.get("KSEG_PRINT_FINGERPRINT"):  # compared across workers by the tests
        print(f"weights fingerprint: {_fingerprint(model)}", flush=True)
    if recipe.data.skip_bad_samples:
        print(f"kseg.train: skipped {len(bad)} bad sample(s)" + "".join(f"\n  {p}" for p in bad), flush=True)
    print(f"\nDone: {summary['steps']} steps in {elapsed / 60:.1f} min; best val mIoU "
          f"{evaluator.best['mIoU']:.2f} at step {evaluator.best['step']}. "
          f"Checkpoints: {work_dir}/best.weights.h5, {work_dir}/last.weights.h5", flush=True)
    return summary


def _fingerprint(model):
    """sha256 of every weight's bytes (bit-identical replicas/workers) plus the L2 norm
    and a fixed random projection of all weights (to compare runs with a tolerance)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    norm, proj = 0.0, 0.0
    for i, w in enumerate(model.get_weights()):
        a = np.asarray(w, np.float32)
        h.update(a.tobytes())
        norm += float(np.sum(a.astype(np.float64) ** 2))
        r = np.random.default_rng(i).standard_normal(a.shape)
        proj += float(np.sum(a * r))
    return json.dumps({"sha256": h.hexdigest()[:16], "l2": norm ** 0.5, "proj": proj})


def _input_error(error):
    """The DatasetError text inside a TF error raised by the input pipeline, else None."""
    import re

    message = getattr(error, "message", str(error))
    found = re.search(r"DatasetError: ([^\n]*)", message) or re.search(r"(kseg\.data[^\n]*)", message)
    return None if found is None else found.group(1)


def _backup_step(backup_dir, steps_per_epoch):
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        meta = json.load(f)
    return meta.get("step", meta["epoch"] * steps_per_epoch)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from kseg.config.recipe import RecipeError
    from kseg.data.registry import DatasetError
    from kseg.training.strategy import StrategyError

    try:
        recipe = load_recipe(args.recipe, args.set)
        if recipe.train.accumulate_steps < 1:
            raise RecipeError(f"train.accumulate_steps must be >= 1, got {recipe.train.accumulate_steps}")
        work_dir = resolve_work_dir(recipe, args.recipe, args.work_dir)
        run(recipe, work_dir, resume=args.resume, strategy=args.strategy, cpu_replicas=args.cpu_replicas)
    except (RecipeError, DatasetError, StrategyError, FileNotFoundError) as e:
        raise SystemExit(f"kseg.train: error: {e}") from None
    except ValueError as e:
        if "checkpoint" in str(e) or "train.precision" in str(e):
            raise SystemExit(f"kseg.train: error: {e}") from None
        raise


if __name__ == "__main__":
    sys.exit(main())
