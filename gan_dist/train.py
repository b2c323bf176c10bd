"""The trainer loop: flat and readable. Builds nothing itself; wires data, state, step, checkpoints and summaries.

  restore or init -> while step < train_steps:
      train(iterator, n)                 n steps in one tf.function, no host sync in between
      every summary_every:  scalars + log line with images/s and ETA     (chief)
      every sample_every:   fixed-noise grid -> TensorBoard + PNG        (chief)
      every checkpoint_every: save                                       (all workers)
"""

import dataclasses
import os
import time

from absl import logging
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import data
from gan_dist import flags as gan_flags
from gan_dist import sample as sample_lib
from gan_dist import state as state_lib
from gan_dist import strategy as strategy_lib
from gan_dist import summaries
from gan_dist import train_step as train_step_lib


def resolve_config(cfg, source: data.DataSource):
  """Fills in what the data decides (num_classes)."""
  return dataclasses.replace(cfg, num_classes=cfg.num_classes or source.num_classes)


def prepare_workdir(cfg, is_chief: bool) -> None:
  """Writes flags.txt on a fresh workdir; on an existing one, checks that this run can resume it."""
  path = os.path.join(cfg.workdir, "flags.txt")
  if os.path.exists(path):
    saved = gan_flags.config_from_flagfile(path)
    problem = gan_flags.check_resume_compatible(saved, cfg)
    if problem:
      raise ValueError(problem)
    if is_chief:  # Keep the first run's flags; record what this one changed.
      gan_flags.write_flagfile(cfg, os.path.join(cfg.workdir, "flags_latest.txt"))
  elif is_chief:
    gan_flags.write_flagfile(cfg, path)


def _next_boundary(step: int, cfg) -> int:
  candidates = [cfg.train_steps]
  for every in (cfg.summary_every, cfg.sample_every, cfg.checkpoint_every):
    candidates.append((step // every + 1) * every)
  return min(candidates)


def _due(step: int, every: int, cfg) -> bool:
  return step % every == 0 or step == cfg.train_steps


def run(cfg, strategy: tf.distribute.Strategy) -> dict:
  """Trains until `cfg.train_steps`, resuming from `cfg.workdir` if it holds a checkpoint.

  Returns:
    The last logged metrics (host floats), with "step".
  """
  is_chief = strategy_lib.is_chief(strategy)
  source = data.load(cfg)
  cfg = resolve_config(cfg, source)
  prepare_workdir(cfg, is_chief)
  logging.info("Data: %d images %s from %s", len(source.images), source.images.shape[1:], source.name)

  state = state_lib.create_state(cfg, strategy, cfg.num_classes)
  gan = state.gan
  checkpointer = checkpoint_lib.Checkpointer(cfg, state, strategy)
  step = checkpointer.restore_or_initialize()
  if step >= cfg.train_steps:
    logging.info("Step %d already reaches --train_steps=%d: nothing to do", step, cfg.train_steps)
    return {"step": step}

  dataset = strategy.distribute_datasets_from_function(
      data.make_dataset_fn(cfg, source, gan.image_shape, start_step=step))
  iterator = iter(dataset)
  train = train_step_lib.make_train_step(cfg, strategy, state)

  writer = summaries.Writer(os.path.join(cfg.workdir, "tensorboard"), enabled=is_chief)
  grid_noise, grid_labels, grid_rows = sample_lib.grid_inputs(gan, cfg.num_samples, cfg.seed)
  generate_fn = sample_lib.make_generate_fn(state.sampling_generator, gan)
  images_per_step = cfg.batch_size * cfg.d_steps_per_g
  logging.info("Training %s from step %d to %d: %d replica(s), global batch %d, %d steps per epoch",
               cfg.arch, step, cfg.train_steps, strategy.num_replicas_in_sync, cfg.batch_size,
               data.steps_per_epoch(len(source.images), cfg))

  metrics = {}
  window_start, window_time = step, 0.0
  while step < cfg.train_steps:
    num_steps = min(cfg.steps_per_loop, _next_boundary(step, cfg) - step)
    t0 = time.perf_counter()
    out = train(iterator, tf.constant(num_steps, tf.int32))
    step += num_steps

    if _due(step, cfg.summary_every, cfg):
      # The only host synchronisation of the loop: the metrics of the last chunk leave the device here.
      metrics = {k: float(v) for k, v in out.items()}
      metrics.update({k: float(v) for k, v in train_step_lib.loss_scales(state).items()})
      metrics.update({k: float(v) for k, v in train_step_lib.skipped_steps(state).items()})
      window_time += time.perf_counter() - t0
      steps_per_sec = (step - window_start) / max(window_time, 1e-9)
      metrics["steps_per_sec"] = steps_per_sec
      metrics["images_per_sec"] = steps_per_sec * images_per_step
      writer.scalars(step, metrics)
      eta = (cfg.train_steps - step) / max(steps_per_sec, 1e-9)
      logging.info("step %d/%d  d_loss %.4f  g_loss %.4f  D(real) %.3f  D(fake) %.3f  %.1f images/s  ETA %s",
                   step, cfg.train_steps, metrics["d_loss"], metrics["g_loss"], metrics["d_real_output"],
                   metrics["d_fake_output"], metrics["images_per_sec"], _format_eta(eta))
      window_start, window_time = step, 0.0
    else:
      window_time += time.perf_counter() - t0

    if is_chief and _due(step, cfg.sample_every, cfg):
      images = sample_lib.generate(generate_fn, gan, grid_noise, grid_labels)
      grid = summaries.image_grid(images, rows=grid_rows or None)
      writer.image(step, "samples", grid)
      summaries.write_png(os.path.join(cfg.workdir, "samples", f"step_{step:08d}.png"), grid)

    if _due(step, cfg.checkpoint_every, cfg):
      path = checkpointer.save(step)
      logging.info("Saved checkpoint %s", path)
    writer.flush()

  writer.close()
  metrics["step"] = step
  return metrics


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
