"""Checkpoints: everything needed to resume exactly, saved by every worker, kept by the chief.

Saved: G, D, the EMA generator (if any), both optimizers (their slots, iterations and float16 loss scales), the
step, the RNG state and the dropout seed states. The data order is a function of (seed, step), so nothing of the
input pipeline needs saving. Mirrored variables are saved once, so checkpoints do not depend on the topology
(a 2-worker run resumes on one process with any replica count, and the other way round).

Multi-worker: every worker must call save (it contains collectives); non-chief workers write into a temporary
directory that they remove right after.
"""

import os
import shutil
import tempfile
from typing import Optional

from absl import logging
import tensorflow as tf

from gan_dist import strategy as strategy_lib


def make_checkpoint(state) -> tf.train.Checkpoint:
  """The tf.train.Checkpoint of a TrainState."""
  items = dict(generator=state.gan.generator, discriminator=state.gan.discriminator,
               g_optimizer=state.g_optimizer, d_optimizer=state.d_optimizer, step=state.step, rng=state.rng,
               seed_states=state.seed_states())
  if state.ema_generator is not None:
    items["ema_generator"] = state.ema_generator
  return tf.train.Checkpoint(**items)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


class Checkpointer:
  """Saves and restores a run's checkpoint in `<workdir>/checkpoints/ckpt-<step>`.

  Args:
    cfg: the Config (workdir, max_to_keep, keep_checkpoint_every_n_hours).
    state: the TrainState to save.
    strategy: decides chief or worker; non-chief workers save into a temporary directory.
  """

  def __init__(self, cfg, state, strategy: tf.distribute.Strategy):
    self.state = state
    self.checkpoint = make_checkpoint(state)
    self.is_chief = strategy_lib.is_chief(strategy)
    self.directory = checkpoint_dir(cfg.workdir)
    self._kwargs = dict(max_to_keep=cfg.max_to_keep,
                        keep_checkpoint_every_n_hours=cfg.keep_checkpoint_every_n_hours or None)
    # The chief's manager also reads: every worker restores from the chief's directory (shared storage).
    self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, **self._kwargs)

  def latest(self) -> Optional[str]:
    return self.manager.latest_checkpoint

  def restore_or_initialize(self) -> int:
    """Restores the latest checkpoint if there is one; returns the step to start from (0 if fresh).

    Raises:
      ValueError: the checkpoint does not match the models (another architecture or precision).
    """
    path = self.latest()
    if path is None:
      logging.info("No checkpoint in %s: starting from step 0", self.directory)
      return 0
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      raise ValueError(f"Checkpoint {path} does not match this model (different --arch, --latent_dim, "
                       f"--precision or --ema_decay?): {str(e).splitlines()[0]}") from None
    step = int(self.state.step.numpy())
    logging.info("Resumed from %s at step %d", path, step)
    return step

  def save(self, step: int) -> str:
    """Saves at `step` (all workers must call this together). Returns the chief's checkpoint path."""
    if self.is_chief:
      return self.manager.save(checkpoint_number=step)
    tmp = tempfile.mkdtemp(prefix="gan_dist_worker_ckpt_")
    try:
      tf.train.CheckpointManager(self.checkpoint, tmp, max_to_keep=1).save(checkpoint_number=step)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(self.directory, f"ckpt-{step}")


def restore_for_inference(checkpoint: tf.train.Checkpoint, workdir: str, step: Optional[int] = None) -> str:
  """Restores the latest (or step-`step`) checkpoint of `workdir` into `checkpoint`, ignoring unused parts."""
  directory = checkpoint_dir(workdir)
  path = os.path.join(directory, f"ckpt-{step}") if step is not None else tf.train.latest_checkpoint(directory)
  if path is None or not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"No checkpoint {'at step %d ' % step if step is not None else ''}in {directory}")
  checkpoint.restore(path).expect_partial()
  return path
