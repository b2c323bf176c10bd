"""Checkpoints: everything needed to resume exactly, saved by every worker, kept by the chief.

Saved: G, D, the EMA generator (if any), both optimizers (their slots, iterations and float16 loss scales), the
step, the dropout seed states and ADA's augmentation probability (--augment=ada). Noise and data order are functions
of (seed, step), so nothing else needs saving.
Mirrored variables are saved once, so checkpoints do not depend on the topology (a 2-worker run resumes on one
process with any replica count, and the other way round).

Multi-worker: every worker must call save (it contains collectives); non-chief workers write into a temporary
directory that they remove right after. Every worker restores from the chief's directory, so a multi-machine run
needs the workdir on shared storage. Each save logs a fingerprint of what was written (`fingerprint`): equal
fingerprints on all workers show that they hold identical weights, optimizer slots and step.

Crash safety. TensorFlow writes a checkpoint into `ckpt-N_temp/` and renames the files into place, then rewrites
the `checkpoint` index file atomically (temporary file + rename); only then is ckpt-N the latest. A process killed
at any instant therefore leaves the previous latest checkpoint intact and listed. What it may leave behind (a
`_temp` directory, a temporary index file, a half-deleted old checkpoint) is removed by `clean_leftovers` when the
next run starts. Restoring reads every tensor of the checkpoint first (TensorFlow checks each tensor's CRC32C), so
a truncated or damaged checkpoint is reported with the newest one that restores, never trained on.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from typing import List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
# The reader of one checkpoint prefix (see _reader); tf.train.load_checkpoint has no other public equivalent.
from tensorflow.python.training import py_checkpoint_reader

from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import files
from gan_dist import strategy as strategy_lib
from gan_dist import workdir as workdir_lib

_CKPT_FILE = re.compile(r"^ckpt-(\d+)\.(index|data-\d+-of-(\d+))$")


def make_checkpoint(state) -> tf.train.Checkpoint:
  """The tf.train.Checkpoint of a TrainState."""
  items = dict(generator=state.gan.generator, discriminator=state.gan.discriminator,
               g_optimizer=state.g_optimizer, d_optimizer=state.d_optimizer, step=state.step,
               seed_states=state.seed_states())
  if state.ema_generator is not None:
    items["ema_generator"] = state.ema_generator
  if state.augment_p is not None:
    items["augment_p"] = state.augment_p
  return tf.train.Checkpoint(**items)


def _is_out_of_space(error: Exception) -> bool:
  """Whether a failed write ran out of disk space (TensorFlow reports ENOSPC as ResourceExhaustedError; Python as
  OSError with errno ENOSPC or EDQUOT)."""
  if isinstance(error, OSError):
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
  message = str(error).lower()
  return "no space" in message or "quota" in message


def _remove(path: str) -> None:
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  elif tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def fingerprint(path: str) -> str:
  """A short hash of every saved tensor (names and values) of the checkpoint at `path` (e.g. `.../ckpt-20`).

  The object-graph proto is left out: it describes the Python objects, not the values. Two checkpoints written
  by different workers of one step have the same fingerprint exactly when every variable is bitwise equal.
  """
  reader = _reader(path)
  digest = hashlib.sha256()
  for name in sorted(reader.get_variable_to_shape_map()):
    if name == "_CHECKPOINTABLE_OBJECT_GRAPH":
      continue
    digest.update(name.encode())
    digest.update(np.asarray(reader.get_tensor(name)).tobytes())
  return digest.hexdigest()[:16]


def _reader(path: str):
  """The reader of the checkpoint with prefix `path`. Not tf.train.load_checkpoint: it takes a prefix that
  tf.io.gfile.isdir calls a directory (ram:// says so of every path) for a directory, and looks inside it."""
  return py_checkpoint_reader.NewCheckpointReader(path)


def verify(path: str) -> Optional[str]:
  """Reads every tensor of the checkpoint at `path`; returns why it cannot be restored, or None if it can.

  TensorFlow checks the CRC32C of each tensor it reads, so this catches truncated and damaged data files as well as
  a broken index.
  """
  try:
    reader = _reader(path)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except Exception as e:  # pylint: disable=broad-except  (the reader fails in many ways: OpError, IndexError, ...)
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
  return None


def _files_by_step(directory: str) -> dict:
  """{step: [file names]} of the ckpt-<step>.* files in `directory`."""
  found = {}
  for name in tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []:
    match = _CKPT_FILE.match(name)
    if match:
      found.setdefault(int(match.group(1)), []).append(name)
  return found


def _complete(names: List[str]) -> bool:
  """Whether a checkpoint's files are all there: its index and every data shard it names."""
  shards = [n for n in names if ".data-" in n]
  if f"{names[0].split('.')[0]}.index" not in names or not shards:
    return False
  total = int(_CKPT_FILE.match(shards[0]).group(3))
  return len(shards) == total


class Checkpointer:
  """Saves and restores a run's checkpoint in `<workdir>/checkpoints/ckpt-<step>`.

  Args:
    cfg: the Config (workdir, max_to_keep, keep_checkpoint_every_n_hours, resume_step).
    state: the TrainState to save.
    strategy: decides chief or worker; non-chief workers save into a temporary directory.
  """

  def __init__(self, cfg, state, strategy: tf.distribute.Strategy):
    self.cfg = cfg
    self.state = state
    self.checkpoint = make_checkpoint(state)
    self.strategy = strategy
    self.is_chief = strategy_lib.is_chief(strategy)
    self.task_type, self.task_id = strategy_lib.task(strategy)
    self.directory = workdir_lib.checkpoint_dir(cfg.workdir)
    self._kwargs = dict(max_to_keep=cfg.max_to_keep,
                        keep_checkpoint_every_n_hours=cfg.keep_checkpoint_every_n_hours or None)
    self._manager = None
    self._superseded = []
    # The best so far, read once, before any step: every worker reads the same file then (the chief can only write
    # it after a step, which needs every worker). save_best decides from this copy, never from the file, which the
    # chief rewrites while the other workers may not have reached that decision yet: a worker that read the newer
    # file skipped a save the chief made, and its save counter, hence its checkpoints, differed from the chief's.
    self._best = read_best(cfg.workdir)

  @property
  def manager(self) -> tf.train.CheckpointManager:
    """The chief's CheckpointManager. Created on first use: it may write the directory."""
    if self._manager is None:
      self._manager = tf.train.CheckpointManager(self.checkpoint, self.directory, **self._kwargs)
    return self._manager

  def _listed(self) -> List[int]:
    """Steps of the checkpoints the `checkpoint` index file lists, oldest first (empty if it is unreadable)."""
    try:
      state = tf.train.get_checkpoint_state(self.directory)
    except (tf.errors.OpError, ValueError) as e:  # A damaged index file: fall back to the files themselves.
      logging.warning("Cannot read %s/checkpoint (%s); looking at the checkpoint files instead", self.directory, e)
      return []
    if state is None:
      return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    steps = []
    for path in paths:
      match = re.search(r"ckpt-(\d+)$", path)
      if match:
        steps.append(int(match.group(1)))
    return steps

  def candidates(self) -> List[int]:
    """Steps that can be resumed from, newest first: listed checkpoints and complete unlisted ones."""
    on_disk = _files_by_step(self.directory)
    steps = set(self._listed()) | {s for s, names in on_disk.items() if _complete(names)}
    return sorted(steps, reverse=True)

  def path(self, step: int) -> str:
    return f"{self.directory}/ckpt-{step}"

  def restore(self) -> int:
    """Restores the checkpoint to resume from (the latest, or --resume_step); returns its step (0 if none).

    Writes nothing: a problem found here leaves the workdir as it was.

    Raises:
      errors.UserError: --resume_step names no checkpoint, or the checkpoint belongs to another model.
      errors.CorruptCheckpointError: the checkpoint cannot be read; names the newest one that can, and the flag.
    """
    listed = self._listed()
    steps = self.candidates()
    if self.cfg.resume_step >= 0:
      if self.cfg.resume_step not in steps:
        raise errors.UserError(f"--resume_step={self.cfg.resume_step}: no checkpoint of that step in "
                               f"{self.directory} (there are: {', '.join(map(str, steps)) or 'none'})")
      step = self.cfg.resume_step
      self._superseded = [s for s in steps if s > step]
    elif listed:
      step = listed[-1]  # The index file's latest: what TensorFlow itself would resume from.
    elif steps:
      step = steps[0]
    else:
      logging.info("No checkpoint in %s: starting from step 0", self.directory)
      return 0
    path = self.path(step)
    problem = verify(path)
    if problem:
      raise errors.CorruptCheckpointError(self._corruption_message(path, problem, [s for s in steps if s < step]))
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      shaping = ", ".join(f"--{name}" for name in config_lib.CHECKPOINT_SHAPING_FIELDS)
      raise errors.UserError(
          f"checkpoint {path} belongs to another model than this run's (one of {shaping} differs): "
          f"{str(e).splitlines()[0][:200]}; use a new --workdir or the flags of the run that wrote it") from None
    restored = int(self.state.step.numpy())
    logging.info("Resumed from %s at step %d", path, restored)
    self._apply_learning_rates()
    return restored

  def _apply_learning_rates(self) -> None:
    """The flags' learning rates win over the checkpoint's (Keras keeps the rate in an optimizer variable)."""
    for name, optimizer, rate in (("g", self.state.g_optimizer, self.cfg.g_lr),
                                  ("d", self.state.d_optimizer, self.cfg.d_lr)):
      inner = getattr(optimizer, "inner_optimizer", optimizer)
      saved = float(inner.learning_rate.numpy())
      if saved != np.float32(rate):
        logging.warning("--%s_lr=%g replaces the learning rate %g of the checkpoint", name, rate, saved)
        inner.learning_rate.assign(rate)

  def _corruption_message(self, path: str, problem: str, older: List[int]) -> str:
    for step in older:
      if verify(self.path(step)) is None:
        return (f"checkpoint {path} is damaged ({problem}); the newest checkpoint that restores is "
                f"{self.path(step)}: rerun with --resume_step={step} to continue from it")
    return (f"checkpoint {path} is damaged ({problem}) and no older checkpoint in {self.directory} restores; "
            "start over with a new --workdir")

  def leftovers(self) -> List[str]:
    """What a killed run or a failed save left behind: `ckpt-N_temp/` directories of interrupted saves, temporary
    index files, checkpoints missing some of their files (an interrupted deletion of an old checkpoint) and
    gan_dist's own temporary files in the workdir. Reads only."""
    leftovers = []
    for directory in (self.cfg.workdir, self.directory, workdir_lib.samples_dir(self.cfg.workdir),
                      workdir_lib.best_dir(self.cfg.workdir)):
      if not tf.io.gfile.isdir(directory):
        continue
      for name in tf.io.gfile.listdir(directory):
        name = name.rstrip("/")
        if (name.endswith("_temp") or name.endswith(files.TMP_SUFFIX) or
            (name.startswith("checkpoint.tmp") and directory == self.directory)):
          leftovers.append(f"{directory}/{name}")
    listed = set(self._listed())
    for step, names in _files_by_step(self.directory).items():
      if step not in listed and not _complete(names):
        leftovers += [f"{self.directory}/{n}" for n in names]
    return leftovers

  def leftover_bytes(self) -> int:
    """Bytes that `clean_leftovers` will free (counted as free space by the start-up space check)."""
    total = 0
    for path in self.leftovers():
      if tf.io.gfile.isdir(path):
        total += sum(tf.io.gfile.stat(f"{root}/{name}").length for root, _, names in tf.io.gfile.walk(path)
                     for name in names)
      elif tf.io.gfile.exists(path):
        total += tf.io.gfile.stat(path).length
    return total

  def clean_leftovers(self) -> None:
    """Removes `leftovers()` (chief only, after every check passed, before the first write). With --resume_step,
    newer checkpoints are dropped from the index so that the resumed run's saves become the latest."""
    if not self.is_chief:
      return
    for path in self.leftovers():
      logging.warning("Removing %s, left by an interrupted run or a failed save", path)
      _remove(path)
    if self._superseded:
      state = tf.train.get_checkpoint_state(self.directory)
      times = {int(m.group(1)): t for p, t in zip(state.all_model_checkpoint_paths,
                                                  state.all_model_checkpoint_timestamps)
               for m in [re.search(r"ckpt-(\d+)$", p)] if m} if state else {}
      kept = sorted(set(self._listed()) - set(self._superseded))
      logging.warning("--resume_step=%d: checkpoints of steps %s are no longer listed; this run's saves replace them",
                      self.cfg.resume_step, self._superseded)
      # With their timestamps: CheckpointManager takes a listed checkpoint without one for one kept by
      # --keep_checkpoint_every_n_hours, drops it from the index and never deletes it (outside --max_to_keep).
      now = time.time()
      tf.compat.v1.train.update_checkpoint_state(
          self.directory, self.path(self.cfg.resume_step), all_model_checkpoint_paths=[self.path(s) for s in kept],
          all_model_checkpoint_timestamps=[times.get(s, now) for s in kept],
          last_preserved_timestamp=state.last_preserved_timestamp if state else None)
      self._manager = None

  def _disk_full(self, error: Exception, step: int, directory: str) -> errors.DiskFullError:
    """The one-line error of a save of `step` into `directory` that ran out of space, after removing its files."""
    for path in [f"{directory}/{n}" for n in tf.io.gfile.listdir(directory) if n.rstrip("/").endswith("_temp")
                 or re.match(rf"^(ckpt|best)-{step}\.", n)]:
      if path.rstrip("/").endswith("_temp") or directory != self.directory or step not in self._listed():
        _remove(path.rstrip("/"))
    size = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in self.state.variables())
    where = directory
    if files.is_local(directory):
      mount = os.path.abspath(directory)
      while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
      where = f"{mount} (holding {directory}; {shutil.disk_usage(directory).free / 2**20:.1f} MiB free)"
    latest = tf.train.latest_checkpoint(self.directory)
    kept = f"the last checkpoint, {latest}, is intact" if latest else "no earlier checkpoint exists"
    return errors.DiskFullError(
        f"no space left to save the checkpoint of step {step} ({size / 2**20:.1f} MiB) on the filesystem {where} "
        f"({type(error).__name__}); {kept}. Free some space and rerun the same command to resume")

  def save(self, step: int) -> str:
    """Saves at `step` (all workers must call this together). Returns the chief's checkpoint path."""
    self.state.prepare_ema()
    if self.is_chief:
      try:
        path = self.manager.save(checkpoint_number=step)
      except (tf.errors.ResourceExhaustedError, OSError) as e:
        if not _is_out_of_space(e):
          raise
        raise self._disk_full(e, step, self.directory) from None
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
    return self.path(step)

  @property
  def best(self) -> Optional[dict]:
    """{"step", "metric", "value", "checkpoint"} of the run's best checkpoint so far (its path None on workers
    other than the chief, which keep no copy), or None."""
    return self._best

  def save_best(self, step: int, metric: str, value: float) -> Optional[str]:
    """Keeps this checkpoint in `<workdir>/checkpoints/best/` with `best.json` if `value` (lower is better) beats the
    best so far. All workers call it with the same value and decide alike (save has collectives, and every save
    counts in the saved save counter); returns the chief's path or None."""
    best = self._best
    if best is not None and best.get("metric") == metric and best["value"] <= value:
      return None
    self.state.prepare_ema()
    path = None
    if self.is_chief:
      best_dir = workdir_lib.best_dir(self.cfg.workdir)
      try:
        path = tf.train.CheckpointManager(self.checkpoint, best_dir, max_to_keep=1,
                                          checkpoint_name="best").save(checkpoint_number=step)
        files.write_atomic(_best_info_path(self.cfg.workdir),
                           json.dumps({"step": step, "metric": metric, "value": value, "checkpoint": path}))
      except (tf.errors.ResourceExhaustedError, OSError) as e:
        if not _is_out_of_space(e):
          raise
        raise self._disk_full(e, step, best_dir) from None
      logging.info("New best %s %.4f at step %d: %s", metric, value, step, path)
    else:
      tmp = tempfile.mkdtemp(prefix="gan_dist_worker_best_")
      try:
        tf.train.CheckpointManager(self.checkpoint, tmp, max_to_keep=1).save(checkpoint_number=step)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
    self._best = {"step": step, "metric": metric, "value": value, "checkpoint": path}
    return path

  def _log_fingerprint(self, step: int, path: str) -> None:
    if self.task_type is None:
      return  # One process: nothing to compare with.
    logging.info("Checkpoint step %d fingerprint %s (%s %d)", step, fingerprint(path), self.task_type, self.task_id)


def _best_info_path(workdir: str) -> str:
  return f"{workdir_lib.best_dir(workdir)}/best.json"


def read_best(workdir: str) -> Optional[dict]:
  """{"step", "metric", "value", "checkpoint"} of the run's best checkpoint, or None."""
  path = _best_info_path(workdir)
  if not tf.io.gfile.exists(path):
    return None
  return json.loads(files.read_text(path))


def best_checkpoint(workdir: str) -> str:
  """The path of the best checkpoint (`<workdir>/checkpoints/best/`, by FCD) of `workdir`.

  Raises:
    errors.UserError: the run kept none (it was trained without --eval_every).
  """
  info = read_best(workdir)
  if info is None:
    raise errors.UserError(f"no best checkpoint in {workdir_lib.best_dir(workdir)}: train with --eval_every to "
                           "keep one")
  # best.json names the path it was written at; the workdir may have moved since.
  return f"{workdir_lib.best_dir(workdir)}/{os.path.basename(info['checkpoint'])}"


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a checkpoint to resume from (complete or damaged, but one): what makes a run a resume."""
  directory = workdir_lib.checkpoint_dir(workdir)
  return tf.io.gfile.exists(f"{directory}/checkpoint") or bool(_files_by_step(directory))


def restorable_steps(directory: str) -> List[int]:
  """Steps of the complete checkpoints (index and every data shard) in `directory`, oldest first."""
  return sorted(s for s, names in _files_by_step(directory).items() if _complete(names))


def inference_path(workdir: str, step: Optional[int] = None, best: bool = False) -> str:
  """The checkpoint a tool reads from `workdir`: the latest, that of `step`, or the best one (`best_checkpoint`).

  Raises:
    errors.UserError: both `step` and `best`, no checkpoint at all, no checkpoint of `step` (the message lists
      those there are), or no best checkpoint.
  """
  if best:
    if step is not None:
      raise errors.UserError("pass --step or --best, not both")
    return best_checkpoint(workdir)
  directory = workdir_lib.checkpoint_dir(workdir)
  if step is not None:
    steps = restorable_steps(directory)
    if step not in steps:
      best_info = read_best(workdir)
      kept = (f"; step {step} is the best checkpoint, kept in {workdir_lib.best_dir(workdir)}: pass --best"
              if best_info is not None and best_info.get("step") == step else "")
      raise errors.UserError(f"no checkpoint at step {step} in {directory}; there are: "
                             f"{', '.join(map(str, steps)) or 'none'}{kept}")
    return f"{directory}/ckpt-{step}"
  try:
    latest = tf.train.latest_checkpoint(directory)
  except (tf.errors.OpError, ValueError):  # A damaged index file: the newest complete checkpoint instead.
    latest = None
  if latest is not None and tf.io.gfile.exists(latest + ".index"):
    return latest
  steps = restorable_steps(directory)
  if steps:
    return f"{directory}/ckpt-{steps[-1]}"
  raise errors.UserError(f"no checkpoint in {directory}: is {workdir} a trained workdir?")


def restore_for_inference(checkpoint: tf.train.Checkpoint, path: str) -> str:
  """Restores the checkpoint at `path` (see `inference_path`) into `checkpoint`, ignoring parts it does not use.

  Every variable of the models being restored must come from the checkpoint: a checkpoint of another architecture
  would otherwise leave a randomly initialised generator and no error. Returns `path`.

  Raises:
    errors.UserError: the checkpoint belongs to other models than `checkpoint`'s (flags.txt).
    errors.CorruptCheckpointError: it cannot be read (truncated, damaged); names the newest older one that can.
  """
  try:
    status = checkpoint.restore(path)
    status.assert_existing_objects_matched()
  except (tf.errors.OpError, IndexError, AssertionError, ValueError) as e:
    problem = verify(path)  # Only read again when the restore failed: a damaged file, or another model's?
    if problem:
      raise errors.CorruptCheckpointError(_inference_corruption_message(path, problem)) from None
    raise errors.UserError(f"checkpoint {path} does not match the run's models (flags.txt): "
                           f"{str(e).strip().splitlines()[0][:200]}") from None
  status.expect_partial()  # What the checkpoint holds beyond these objects (e.g. optimizers) may stay unread.
  return path


def _inference_corruption_message(path: str, problem: str) -> str:
  """Why the checkpoint at `path` cannot be read, and the newest older checkpoint of its directory that can."""
  directory, name = path.rsplit("/", 1)
  match = re.fullmatch(r"ckpt-(\d+)", name)
  if match:  # A regular checkpoint: older ones may be fine.
    older = [s for s in restorable_steps(directory) if s < int(match.group(1))]
    for step in reversed(older):
      if verify(f"{directory}/ckpt-{step}") is None:
        return (f"checkpoint {path} is damaged ({problem}); the newest checkpoint that restores is "
                f"{directory}/ckpt-{step}: pass --step={step}")
  return f"checkpoint {path} is damaged ({problem}); pass --step=N for another checkpoint of the run"
