"""Sampling: the fixed-noise grids of training, and the CLI that samples a trained workdir.

  python -m gan_dist.sample --workdir=W --num=64 --out=samples.npz [--label=K] [--seed=S] [--step=N]
  python -m gan_dist.sample --workdir=W --num=100 --grid=grid.png     (one row per class when conditional)

writes `images` (uint8 [N, H, W, C]) and, for conditional models, `labels` (int32 [N]), from the latest checkpoint
(or --step), using the EMA generator when the run kept one. It reads W/flags.txt and never trains.
"""

import io
import os
from typing import Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import logging  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import flags as gan_flags
from gan_dist import state as state_lib
from gan_dist import summaries


def sample_inputs(gan, num: int, seed: int, label: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Deterministic noise [num, latent_dim] and int32 labels [num] (None if unconditional).

  Labels are `label` for all, or cycle through the classes.
  """
  noise = np.random.RandomState(seed).standard_normal((num, gan.latent_dim)).astype(np.float32)
  if not gan.conditional:
    return noise, None
  if label is not None:
    if not 0 <= label < gan.num_classes:
      raise ValueError(f"--label={label} outside [0, {gan.num_classes})")
    return noise, np.full([num], label, np.int32)
  return noise, (np.arange(num) % gan.num_classes).astype(np.int32)


def grid_inputs(gan, num: int, seed: int) -> Tuple[np.ndarray, Optional[np.ndarray], int]:
  """Inputs of a training sample grid and its number of rows: one row per class for conditional models."""
  if not gan.conditional:
    noise, _ = sample_inputs(gan, num, seed)
    return noise, None, 0
  per_class = max(1, num // gan.num_classes)
  noise, _ = sample_inputs(gan, per_class * gan.num_classes, seed)
  labels = np.repeat(np.arange(gan.num_classes, dtype=np.int32), per_class)
  return noise, labels, gan.num_classes


def make_generate_fn(generator, gan):
  """A tf.function (noise [b, latent_dim], int labels [b]) -> images; traced once per batch shape."""
  @tf.function
  def run(z, labels):
    return gan.generate(z, labels, generator=generator)
  return run


def generate(run, gan, noise: np.ndarray, labels: Optional[np.ndarray], batch_size: int = 256) -> np.ndarray:
  """Runs a `make_generate_fn` function in batches; returns float32 images [N, H, W, C] in [-1, 1]."""
  if labels is None:
    labels = np.zeros([len(noise)], np.int32)  # Ignored by unconditional models; keeps one traced signature.
  out = []
  for start in range(0, len(noise), batch_size):
    z = tf.constant(noise[start:start + batch_size])
    out.append(np.asarray(tf.cast(run(z, tf.constant(labels[start:start + batch_size], tf.int32)), tf.float32)))
  return np.concatenate(out)


def write_npz(path: str, arrays: dict) -> None:
  """Writes `arrays` as a compressed .npz on any TensorFlow filesystem (gs://, ...)."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  if "/" in path:
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(buffer.getvalue())


def load_workdir(workdir: str, step: Optional[int] = None):
  """Rebuilds a run's Config and TrainState from `workdir` (flags.txt + checkpoint), on one device."""
  cfg = gan_flags.config_from_flagfile(f"{workdir.rstrip('/')}/flags.txt", workdir=workdir)
  state = state_lib.create_state(cfg, tf.distribute.get_strategy(), cfg.num_classes)
  path = checkpoint_lib.restore_for_inference(checkpoint_lib.make_checkpoint(state), workdir, step)
  logging.info("Loaded %s (step %d)", path, int(state.step.numpy()))
  return cfg, state


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  _, state = load_workdir(fv.workdir, fv.step)
  gan = state.gan
  noise, labels = sample_inputs(gan, fv.num, fv.seed, fv.label)
  run_fn = make_generate_fn(state.sampling_generator, gan)
  images = summaries.to_uint8(generate(run_fn, gan, noise, labels))
  which = f"{'EMA ' if state.ema_generator is not None else ''}generator, step {int(state.step.numpy())}"
  if fv.grid:
    grid = grid_image(run_fn, gan, fv.num, fv.seed, fv.label, images)
    summaries.write_png(fv.grid, grid)
    print(f"Wrote a {grid.shape[1]}x{grid.shape[0]} grid ({which}) to {fv.grid}")
    if not fv["out"].present:
      return
  arrays = {"images": images}
  if labels is not None:
    arrays["labels"] = labels
  write_npz(fv.out, arrays)
  print(f"Wrote {len(images)} images {images.shape[1:]} ({which}) to {fv.out}")


def grid_image(run_fn, gan, num: int, seed: int, label: Optional[int], images: np.ndarray) -> np.ndarray:
  """uint8 [rows * H, cols * W, C]: conditional models without --label get one row per class (num // K columns,
  the layout of the training grids); otherwise `images` (the sampled ones) in a near-square grid."""
  if gan.conditional and label is None:
    noise, labels, rows = grid_inputs(gan, num, seed)
    return summaries.image_grid(generate(run_fn, gan, noise, labels), rows=rows)
  return summaries.image_grid(images)


def run():
  gan_flags.run_tool(main, gan_flags.define_sample_flags)


if __name__ == "__main__":
  run()
