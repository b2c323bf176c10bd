"""The layout of a run directory, and its flags.txt.

  <workdir>/flags.txt            every Config field of the run (written by the chief when a run starts where no
                                 checkpoint is yet; resumes keep it)
  <workdir>/flags_latest.txt     the flags of the latest resumed run
  <workdir>/checkpoints/         ckpt-<step>.*, the `checkpoint` index; best/ (the best checkpoint by FCD)
  <workdir>/tensorboard/         event files (and profiler traces)
  <workdir>/samples/             step_<step>.png sample grids
  <workdir>/classes.json         the names of a conditional run's classes, in label order, where the data names them
                                 (class folders, a pack, TFDS); written by the chief at every start
Any path may be on a TensorFlow filesystem (gs://...).
"""

import json
from typing import List, Sequence, Tuple

from absl import logging
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import files

FLAGS_FILE = "flags.txt"
LATEST_FLAGS_FILE = "flags_latest.txt"
CLASSES_FILE = "classes.json"


def flags_path(workdir: str) -> str:
  return f"{workdir.rstrip('/')}/{FLAGS_FILE}"


def latest_flags_path(workdir: str) -> str:
  return f"{workdir.rstrip('/')}/{LATEST_FLAGS_FILE}"


def classes_path(workdir: str) -> str:
  return f"{workdir.rstrip('/')}/{CLASSES_FILE}"


def checkpoint_dir(workdir: str) -> str:
  return f"{workdir.rstrip('/')}/checkpoints"


def best_dir(workdir: str) -> str:
  return f"{checkpoint_dir(workdir)}/best"


def tensorboard_dir(workdir: str) -> str:
  return f"{workdir.rstrip('/')}/tensorboard"


def samples_dir(workdir: str) -> str:
  return f"{workdir.rstrip('/')}/samples"


def sample_grid_path(workdir: str, step: int) -> str:
  return f"{samples_dir(workdir)}/step_{step:08d}.png"


def event_files(logdir: str) -> List[str]:
  """The TensorBoard event files directly under `logdir` (a run's tensorboard/ or any log folder), unordered."""
  return tf.io.gfile.glob(f"{logdir.rstrip('/')}/events.out.tfevents.*")


def sample_grid_files(workdir: str) -> List[str]:
  """The sample grids `sample_grid_path` names that `workdir` holds, unordered."""
  return tf.io.gfile.glob(f"{samples_dir(workdir)}/step_*.png")


def remove_unsaved_run_outputs(workdir: str) -> Tuple[int, int]:
  """Removes what an earlier run that saved no checkpoint wrote for its viewers: its TensorBoard event files and
  sample grids (a fresh start discards that run; its points would mix with the new run's, its HParams would name
  the row). Profiler traces and logs stay. Returns how many (event files, sample grids) were removed."""
  events = event_files(tensorboard_dir(workdir))
  grids = sample_grid_files(workdir)
  for path in events + grids:
    tf.io.gfile.remove(path)
  return len(events), len(grids)


def write_config(cfg: config_lib.Config, path: str) -> None:
  """Writes `cfg` as a flagfile to `path` atomically (other workers may read it while the chief writes it)."""
  files.write_atomic(path, config_lib.to_flagfile(cfg))


def read_config(path: str, **overrides) -> config_lib.Config:
  """The Config a run wrote to `path` (e.g. `<workdir>/flags.txt`), with `overrides`.

  Raises:
    errors.UserError: there is no such file (not a gan_dist workdir), or it does not parse.
  """
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f"{path} not found: is this a gan_dist workdir? (--workdir names the directory a run "
                           f"trained in; without it, the trainer's default {config_lib.Config().workdir})")
  return config_lib.from_flagfile(files.read_text(path), **overrides)


def read_run_config(workdir: str, **overrides) -> config_lib.Config:
  """The Config of the run in `workdir`, with `workdir` itself set to the path given here: its latest run's flags
  (flags_latest.txt, written by a resumed run: e.g. a --data_dir that moved), else flags.txt. What shapes the
  checkpoint is the same in both (a resume that changes it is refused)."""
  latest = latest_flags_path(workdir)
  return read_config(latest if tf.io.gfile.exists(latest) else flags_path(workdir), workdir=workdir, **overrides)


def write_class_names(workdir: str, names: Sequence[str]) -> None:
  """Records the names of the run's classes (label k is `names[k]`) in classes.json, atomically."""
  files.write_atomic(classes_path(workdir), json.dumps(list(names), ensure_ascii=False, indent=1) + "\n")


def read_class_names(workdir: str, num_classes: int) -> List[str]:
  """The name of each of a run's `num_classes` classes: "" where the data named none (MNIST's digits, a
  --num_classes above the data's, a run older than classes.json); a classes.json that is not a list of strings is
  ignored with a warning (names are for people: a tool must not fail for them)."""
  path = classes_path(workdir)
  names = []
  if num_classes and tf.io.gfile.exists(path):
    try:
      names = json.loads(files.read_text(path))
    except (ValueError, UnicodeDecodeError):
      names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
      logging.warning("%s is not a JSON list of class names: the classes are shown by number", path)
      names = []
  return (names + [""] * num_classes)[:num_classes]
