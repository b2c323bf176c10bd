"""Checkpoints: everything needed to resume exactly, saved by every worker, kept by the chief.

Saved: G, D, the EMA generator (if any), both optimizers (their slots, iterations and float16 loss scales), the
step, the RNG state and the dropout seed states. The data order is a function of (seed, step), so nothing of the
input pipeline needs saving. Mirrored variables are saved once, so checkpoints do not depend on the topology
(a 2-worker run resumes on one process with any replica count, and the other way round).

Multi-worker: every worker must call save (it contains collectives); non-chief workers write into a temporary
directory that they remove right after. Every worker restores from the chief's directory, so a multi-machine run
needs the workdir on shared storage; `restore_or_initialize` checks that all workers resumed at the same step.
Each save logs a fingerprint of what was written (`fingerprint`): equal fingerprints on all workers show that
they hold identical weights, optimizer slots and step.
"""

import hashlib
import os
import shutil
import tempfile
from typing import Optional

from absl import logging
import numpy as np
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


def fingerprint(path: str) -> str:
  """A short hash of every saved tensor (names and values) of the checkpoint at `path` (e.g. `.../ckpt-20`).

  The object-graph proto is left out: it describes the Python objects, not the values. Two checkpoints written
  by different workers of one step have the same fingerprint exactly when every variable is bitwise equal.
  """
  reader = tf.train.load_checkpoint(path)
  digest = hashlib.sha256()
  for name in sorted(reader.get_variable_to_shape_map()):
    if name == "_CHECKPOINTABLE_OBJECT_GRAPH":
      continue
    digest.update(name.encode())
    digest.update(np.asarray(reader.get_tensor(name)).tobytes())
  return digest.hexdigest()[:16]


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
    self.strategy = strategy
    self.is_chief = strategy_lib.is_chief(strategy)
    self.task_type, self.task_id = strategy_lib.task(strategy)
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
      step = 0
    else:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(f"Checkpoint {path} does not match this model (different --arch, --latent_dim, "
                         f"--precision or --ema_decay?): {str(e).splitlines()[0]}") from None
      step = int(self.state.step.numpy())
      logging.info("Resumed from %s at step %d", path, step)
    self._check_workers_agree(step)
    return step

  def _check_workers_agree(self, step: int) -> None:
    """Raises ValueError on every worker if the workers did not all start from the same step.

    Workers that do not share the chief's storage find no checkpoint and would silently train other weights than
    the chief's; one collective here turns that into an error at startup.
    """
    if self.task_type is None:
      return
    local = self.strategy.run(lambda: tf.constant(step, tf.int64))
    total = int(self.strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None))
    if total != step * self.strategy.num_replicas_in_sync:
      raise ValueError(
          f"Workers resumed from different steps (this {self.task_type} {self.task_id}: step {step}, from "
          f"{self.directory}; mean over replicas: {total / self.strategy.num_replicas_in_sync:g}). Every worker "
          f"must see the chief's checkpoints: put --workdir on storage shared by all machines.")

  def save(self, step: int) -> str:
    """Saves at `step` (all workers must call this together). Returns the chief's checkpoint path."""
    if self.is_chief:
      path = self.manager.save(checkpoint_number=step)
      self._log_fingerprint(step, path)
      return path
    # A non-chief worker's save is needed for its collectives, not its files: they go to a private directory (two
    # workers writing the chief's files would corrupt them) that is removed right after.
    tmp = tempfile.mkdtemp(prefix="gan_dist_worker_ckpt_")
    try:
      path = tf.train.CheckpointManager(self.checkpoint, tmp, max_to_keep=1).save(checkpoint_number=step)
      self._log_fingerprint(step, path)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(self.directory, f"ckpt-{step}")

  def _log_fingerprint(self, step: int, path: str) -> None:
    if self.task_type is None:
      return  # One process: nothing to compare with.
    logging.info("Checkpoint step %d fingerprint %s (%s %d)", step, fingerprint(path), self.task_type, self.task_id)


def restore_for_inference(checkpoint: tf.train.Checkpoint, workdir: str, step: Optional[int] = None) -> str:
  """Restores the latest (or step-`step`) checkpoint of `workdir` into `checkpoint`, ignoring unused parts."""
  directory = checkpoint_dir(workdir)
  path = os.path.join(directory, f"ckpt-{step}") if step is not None else tf.train.latest_checkpoint(directory)
  if path is None or not tf.io.gfile.exists(path + ".index"):
    raise FileNotFoundError(f"No checkpoint {'at step %d ' % step if step is not None else ''}in {directory}")
  status = checkpoint.restore(path)
  try:
    # Every variable of the models being restored must come from the checkpoint: a checkpoint of another
    # architecture would otherwise leave a randomly initialised generator and no error.
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise ValueError(f"Checkpoint {path} does not match the run's models (flags.txt): "
                     f"{str(e).splitlines()[0]}") from None
  status.expect_partial()  # What the checkpoint holds beyond these objects (e.g. optimizers) may stay unread.
  return path
