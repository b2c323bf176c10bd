"""The checks of a run before it writes anything: a refused run leaves its workdir exactly as it was.

In the order the trainer calls them:
  check_config(cfg)             needs nothing (first thing main does): architecture name, --profile_steps,
                                --num_cpu_replicas only with --strategy=mirrored
  check_replicas(cfg, strategy) the global batch splits evenly over the replicas (in pairs for --mode_seeking_weight)
  resolve_config(cfg, source)   what the data decides (num_classes)
  check_workdir(cfg)            flags.txt agrees with this run (a resume: a checkpoint exists), the workdir is writable
  check_model(cfg, state)       --class_filter means something for this model, room for two checkpoints
(and, after the checkpoint is restored, `strategy.check_workers_agree`: every worker has the same flags and step).
Every check raises errors.UserError with a one-line message naming the problem and the fix.
"""

import os
import shutil
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import files
from gan_dist import models
from gan_dist import workdir as workdir_lib

# Room a run needs beyond two checkpoints (TensorBoard events, sample grids) before it may start.
DISK_MARGIN_BYTES = 16 << 20


def check_config(cfg: config_lib.Config) -> None:
  """Checks what needs neither devices nor data."""
  models.module_of(cfg.arch)  # Imports a custom architecture's module: one line if it cannot.
  profile_range(cfg)
  if cfg.strategy == "one_device" and cfg.num_cpu_replicas > 1:
    # The CPU split serves MirroredStrategy only: one_device would train one replica while the flag says more.
    raise errors.UserError(f"--num_cpu_replicas={cfg.num_cpu_replicas} splits the CPU into replicas of "
                           "--strategy=mirrored; --strategy=one_device runs one: use --strategy=mirrored, or drop "
                           "--num_cpu_replicas")
  if cfg.communication != "auto" and cfg.strategy != "multi_worker_mirrored":
    # Only MultiWorkerMirroredStrategy takes a collective implementation; the others would ignore the flag.
    raise errors.UserError(f"--communication={cfg.communication} chooses the collectives of "
                           f"--strategy=multi_worker_mirrored; --strategy={cfg.strategy} picks its own (NCCL between "
                           "GPUs under mirrored): drop --communication")


def profile_range(cfg: config_lib.Config) -> Optional[Tuple[int, int]]:
  """(first, last) train steps of --profile_steps, or None."""
  if not cfg.profile_steps:
    return None
  try:
    first, last = (int(x) for x in cfg.profile_steps.split(","))
  except ValueError:
    first = last = -1
  if not 0 < first <= last:
    raise errors.UserError(f"--profile_steps={cfg.profile_steps!r} must be FIRST,LAST with 0 < FIRST <= LAST, "
                           "e.g. --profile_steps=100,110")
  return first, last


def check_replicas(cfg: config_lib.Config, strategy: tf.distribute.Strategy) -> None:
  """The global batch must split evenly over every replica (checked before any data is read)."""
  replicas = strategy.num_replicas_in_sync
  if cfg.batch_size % replicas:
    raise errors.UserError(f"--batch_size={cfg.batch_size} does not split evenly over the {replicas} replicas of "
                           f"--strategy={cfg.strategy}; use a multiple of {replicas}, e.g. "
                           f"--batch_size={max(replicas, cfg.batch_size // replicas * replicas)}")
  per_replica = cfg.batch_size // replicas
  if cfg.mode_seeking_weight > 0 and per_replica % 2:
    raise errors.UserError(f"--mode_seeking_weight needs an even batch on each replica (pairs of one label); "
                           f"--batch_size={cfg.batch_size} gives {per_replica} on each of the {replicas} replicas: "
                           f"use --batch_size={2 * replicas * max(1, per_replica // 2)}")


def resolve_config(cfg: config_lib.Config, source) -> config_lib.Config:
  """Fills in what the data decides (num_classes), refusing a --num_classes below the labels present."""
  if 0 < cfg.num_classes < source.num_classes:
    raise errors.UserError(f"--num_classes={cfg.num_classes} is below the {source.num_classes} classes of "
                           f"{source.name}; pass --num_classes={source.num_classes} or leave it at 0 (from the data)")
  return cfg.replace(num_classes=cfg.num_classes or source.num_classes)


def check_workdir(cfg: config_lib.Config) -> None:
  """Checks, without writing, that this run can use `cfg.workdir`: its latest run's flags agree (flags_latest.txt,
  else flags.txt), and it is writable.

  The latest run's, not the first's: after a resume that changed the data position on purpose
  (--allow_data_position_change), the same command again continues without the flag, and going back is the change.

  Raises:
    errors.UserError: another model's workdir, a changed data position, a workdir inside the image folder it
      trains on, a read-only filesystem (a full one: `check_model`, which knows the checkpoints' size).
  """
  if cfg.dataset == "folder" and cfg.data_dir and files.is_within(cfg.workdir, cfg.data_dir):
    # A folder is listed anew at every start: the run's sample grids would become training images, a class of
    # their own, and the next start would refuse the workdir's checkpoint (another number of classes).
    raise errors.UserError(f"--workdir={cfg.workdir} is inside --data_dir={cfg.data_dir}: the run's sample grids "
                           "would become training images; put the workdir outside the image folder")
  # Only a checkpoint binds a workdir: flags.txt alone (a run stopped before its first save, --train_steps=0 to
  # prepare the data) is replaced by this run's.
  if tf.io.gfile.exists(workdir_lib.flags_path(cfg.workdir)) and checkpoint_lib.has_checkpoint(cfg.workdir):
    problem = config_lib.check_resume_compatible(workdir_lib.read_run_config(cfg.workdir), cfg)
    if problem:
      raise errors.UserError(problem)
  if not files.is_local(cfg.workdir):
    return
  ancestor = files.existing_ancestor(cfg.workdir)
  if not tf.io.gfile.isdir(ancestor):
    raise errors.UserError(f"--workdir={cfg.workdir}: {ancestor} is a file, not a directory")
  # access() reports a read-only filesystem (EROFS) even to root, and writes nothing.
  for directory in (ancestor, workdir_lib.checkpoint_dir(cfg.workdir), workdir_lib.tensorboard_dir(cfg.workdir),
                    workdir_lib.samples_dir(cfg.workdir)):
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
      raise errors.UserError(f"--workdir={cfg.workdir}: {directory} is not writable (read-only filesystem or "
                             "permissions); use a writable --workdir")


def check_model(cfg: config_lib.Config, state, reclaimable_bytes: int = 0) -> None:
  """Checks that need the built model: the class filter's meaning, and room for the checkpoints it makes.

  Args:
    reclaimable_bytes: what the run will delete before its first write (the leftovers of a killed run or of a save
      that ran out of space, `Checkpointer.leftover_bytes`): counted as free.
  """
  if state.gan.conditional and cfg.class_filter >= 0:
    raise errors.UserError(f"--class_filter={cfg.class_filter} keeps one class, but --arch={cfg.arch} is "
                           "conditional and learns from all of them; drop --class_filter or use an "
                           "unconditional --arch")
  if not files.is_local(cfg.workdir):
    return
  size = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in state.variables())
  free = shutil.disk_usage(files.existing_ancestor(cfg.workdir)).free + reclaimable_bytes
  needed = 2 * size + DISK_MARGIN_BYTES  # The new checkpoint is complete before an old one is deleted.
  if free < needed:
    raise errors.UserError(f"--workdir={cfg.workdir}: its filesystem has {free / 2**20:.1f} MiB free, but a "
                           f"checkpoint of this run takes {size / 2**20:.1f} MiB and the run needs at least "
                           f"{needed / 2**20:.0f} MiB; free some space or use another --workdir")
