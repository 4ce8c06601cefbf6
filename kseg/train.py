"""``python -m kseg.train --recipe R [--set a.b=c ...] [--work-dir D] [--resume]``.

Trains a model from a YAML recipe: tf.data pipeline, AdamW with parameter groups,
warmup + poly schedule, periodic whole-image evaluation (mIoU), best/last checkpoints,
``BackupAndRestore`` for ``--resume``, TensorBoard scalars and overlays.

Work dir layout: ``recipe.yaml`` (resolved), ``best.weights.h5``, ``last.weights.h5``,
``eval/step_N.json``, ``tensorboard/``, ``backup/`` (while a run is unfinished).
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


def run(recipe, work_dir, resume=False):
    """Trains ``recipe`` into ``work_dir``; returns a summary dict."""
    import keras
    import tensorflow as tf

    from kseg.data import build_dataset, get_dataset
    from kseg.models import build_from_recipe
    from kseg.training.callbacks import EvaluationCallback, LearningRateLogger, NonFiniteLossGuard

    t = recipe.train
    backup_dir = os.path.join(work_dir, "backup")
    if os.path.isdir(backup_dir) and not resume:
        raise SystemExit(
            f"{work_dir} holds an unfinished run ({backup_dir}). Pass --resume to continue it, "
            "or choose another --work-dir."
        )
    os.makedirs(work_dir, exist_ok=True)
    save_recipe(recipe, os.path.join(work_dir, "recipe.yaml"))
    keras.utils.set_random_seed(t.seed)
    keras.mixed_precision.set_dtype_policy(t.precision)

    steps = chunk_steps(t)
    start_step = _backup_step(backup_dir, steps) if resume else 0
    info = get_dataset(recipe.data.dataset, root=recipe.data.root, split=recipe.data.val_split,
                       reduce_zero_label=recipe.data.reduce_zero_label, folder_spec=recipe.data.folder_spec)
    if recipe.model.num_classes != info.num_classes:
        raise SystemExit(
            f"model.num_classes is {recipe.model.num_classes} but dataset '{info.name}' has "
            f"{info.num_classes} classes: set model.num_classes={info.num_classes}"
        )
    # A resumed run draws fresh augmentation seeds instead of replaying the first batches.
    train_ds = build_dataset(recipe.data, split=recipe.data.train_split, training=True,
                             batch_size=t.global_batch_size, seed=t.seed + start_step)
    val_ds = build_dataset(recipe.data, split=recipe.data.val_split, training=False,
                           batch_size=recipe.eval.batch_size)

    model = build_from_recipe(recipe)
    if recipe.model.class_weight and len(recipe.model.class_weight) != info.num_classes:
        raise SystemExit(f"model.class_weight has {len(recipe.model.class_weight)} values; "
                         f"dataset '{info.name}' has {info.num_classes} classes")
    model.compile(optim=recipe.optim, loss=model.default_loss(recipe.model.class_weight), schedule=recipe.schedule, max_steps=t.max_steps,
                  steps_per_execution=t.steps_per_execution, jit_compile=t.jit_compile)
    writer = tf.summary.create_file_writer(os.path.join(work_dir, "tensorboard", "val"))
    evaluator = EvaluationCallback(
        val_ds, recipe.eval, info.num_classes, info.classes, info.palette, work_dir,
        t.eval_interval, t.max_steps, t.num_overlays, writer,
    )
    callbacks = [
        NonFiniteLossGuard(),
        keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch"),
        evaluator,
        keras.callbacks.TensorBoard(os.path.join(work_dir, "tensorboard"), update_freq=t.log_interval),
        LearningRateLogger(writer, t.log_interval),
    ]
    epochs = t.max_steps // steps
    print(f"kseg.train: {model.variant} ({model.count_params() / 1e6:.2f} M params) on "
          f"{info.name}, {t.max_steps} steps x batch {t.global_batch_size}, crop "
          f"{recipe.data.crop_size[0]}x{recipe.data.crop_size[1]}, eval every {t.eval_interval}; "
          f"work dir {work_dir}" + (f"; resuming at step {start_step}" if start_step else ""), flush=True)
    start = time.time()
    model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=1)
    elapsed = time.time() - start
    model.save_weights(os.path.join(work_dir, "last.weights.h5"))
    summary = {
        "variant": model.variant,
        "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "global_batch_size": t.global_batch_size,
        "crop_size": list(recipe.data.crop_size),
        "train_seconds": round(elapsed, 1),
        "best": evaluator.best,
        "evaluations": evaluator.history,
    }
    with open(os.path.join(work_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nDone: {summary['steps']} steps in {elapsed / 60:.1f} min; best val mIoU "
          f"{evaluator.best['mIoU']:.2f} at step {evaluator.best['step']}. "
          f"Checkpoints: {work_dir}/best.weights.h5, {work_dir}/last.weights.h5", flush=True)
    return summary


def _backup_step(backup_dir, steps_per_epoch):
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return json.load(f)["epoch"] * steps_per_epoch


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    recipe = load_recipe(args.recipe, args.set)
    work_dir = resolve_work_dir(recipe, args.recipe, args.work_dir)
    run(recipe, work_dir, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
