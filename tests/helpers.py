"""Test helpers: tiny IDX fixtures and configs."""

import contextlib
import dataclasses
import gzip
import json
import os
import re
import shutil
import struct

from absl import flags
import numpy as np
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import files
from gan_dist import inference
from gan_dist import state as state_lib
from gan_dist import train
from gan_dist import train_step as train_step_lib
from gan_dist import workdir as workdir_lib
from gan_dist.datasets import tfds_source


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as an (optionally gzipped, by extension) IDX file."""
  array = np.asarray(array, np.uint8)
  header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())


@contextlib.contextmanager
def mock_tfds(monkeypatch, num_examples: int):
  """TFDS datasets by name, offline: tfds.testing.mock_data (MockPolicy.USE_CODE: examples generated from each
  dataset's features, no files), `num_examples` per split.

  mock_data replaces TFDS's download with a no-op; gan_dist's check that refuses a download that cannot work
  (GAN_DIST_OFFLINE, set for the whole suite by tests/conftest.py) is lifted inside, and never tries the network.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (a slow import few tests need)
  with monkeypatch.context() as patch:
    patch.setattr(tfds_source, "download_problem", lambda data_dir_root: None)
    with tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE):
      yield


def make_idx_dir(directory: str, num: int = 64, num_classes: int = 10, seed: int = 0, gz: bool = True) -> str:
  """Writes train/test IDX files of random 28x28 images whose first pixel encodes the example index."""
  rng = np.random.RandomState(seed)
  images = rng.randint(0, 256, size=(num, 28, 28)).astype(np.uint8)
  images[:, 0, 0] = np.arange(num) % 256  # Lets tests recover which example a batch holds.
  labels = (np.arange(num) % num_classes).astype(np.uint8)
  ext = ".gz" if gz else ""
  os.makedirs(directory, exist_ok=True)
  for prefix in ("train", "t10k"):
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{ext}"), images)
    write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
  return directory


def config(tmp_path, **overrides):
  """A small test Config: quick intervals and a tmp workdir; override anything."""
  values = dict(workdir=str(tmp_path / "workdir"), batch_size=8, train_steps=2, steps_per_loop=1,
                summary_every=1, sample_every=1000, checkpoint_every=1000, num_samples=4)
  values.update(overrides)
  return config_lib.make_config(**values)


def config_values(**overrides):
  """A Config of the defaults with `overrides` (no workdir needed)."""
  return config_lib.make_config(**overrides)


def trained_mlp(root, strategy, **overrides):
  """The config of an mlp workdir under `root` trained 4 steps in chunks of 2 (a checkpoint after each) on 64 random
  IDX images: the run that tests which resume or damage a workdir copy (`copy_run`) rather than retrain."""
  cfg = config(root, arch="mlp", data_dir=make_idx_dir(str(root / "idx"), num=64), train_steps=4, steps_per_loop=2,
               checkpoint_every=2, **overrides)
  train.run(cfg, strategy)
  return cfg


def copy_run(cfg, tmp_path, **overrides):
  """`cfg` with its workdir copied to tmp_path/W and `overrides` applied."""
  workdir = str(tmp_path / "W")
  shutil.copytree(cfg.workdir, workdir)
  return dataclasses.replace(cfg, workdir=workdir, **overrides)


def snapshot(directory: str) -> dict:
  """{relative path: sha256 of its bytes} of every file under `directory` (and "<dir>/" for every directory);
  {} if it does not exist. Two equal snapshots mean nothing was created, changed or deleted."""
  import hashlib  # pylint: disable=g-import-not-at-top
  found = {}
  for root, dirs, names in os.walk(directory):
    for d in dirs:
      found[os.path.relpath(os.path.join(root, d), directory) + "/"] = ""
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return found


# Image modes and formats of `make_image_folder`, cycled over the files: (PIL mode, extension).
IMAGE_KINDS = (("RGB", ".png"), ("RGB", ".jpg"), ("L", ".png"), ("L", ".jpg"), ("RGBA", ".png"), ("P", ".png"),
               ("LA", ".png"), ("I;16", ".png"), ("P", ".gif"), ("RGB", ".bmp"), ("P", ".bmp"), ("RGB", ".webp"))


def make_image_folder(directory: str, num: int = 300, classes=("bird", "cat", "dog"), unlabeled: int = 0,
                      seed: int = 0, bad=("corrupt.jpg", "empty.png")) -> dict:
  """Writes a tree of small image files of mixed sizes (10 to 48 pixels a side), modes and formats.

  Files go round-robin into the class folders (every third one of a class one level deeper, in "more/"), after
  `unlabeled` files directly in `directory`; modes and formats cycle through IMAGE_KINDS (gray, RGB, RGBA,
  palette, gray+alpha, 16-bit PNG; PNG, JPEG, GIF, BMP, WebP). Each bad file (junk bytes, or empty if its name
  starts with "empty") goes into the first class folder, and a notes.txt that is not an image into the root.

  Returns:
    {"root": directory, "num_images": decodable images, "bad": [paths of the bad files], "classes": classes}.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  os.makedirs(directory, exist_ok=True)
  for i in range(num):
    mode, ext = IMAGE_KINDS[i % len(IMAGE_KINDS)]
    height, width = rng.randint(10, 49, size=2)
    pixels = rng.randint(0, 256, size=(height, width, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
      image = Image.fromarray((pixels[..., 0].astype(np.uint16) * 257))
    elif mode != "RGB":
      image = image.convert(mode)
    if i < unlabeled or not classes:
      folder = directory
    else:
      k = i - unlabeled
      folder = os.path.join(directory, classes[k % len(classes)], *(["more"] if k // len(classes) % 3 == 2 else []))
    os.makedirs(folder, exist_ok=True)
    image.save(os.path.join(folder, f"img{i:04d}{ext}"))
  bad_paths = []
  for name in bad:
    path = os.path.join(directory, classes[0] if classes else "", name)
    with open(path, "wb") as f:
      f.write(b"" if name.startswith("empty") else b"this is not an image " * 4)
    bad_paths.append(path)
  with open(os.path.join(directory, "notes.txt"), "w") as f:
    f.write("not an image\n")
  return {"root": directory, "num_images": num, "bad": bad_paths, "classes": list(classes)}


def checkpoint_values(prefix) -> dict:
  """{name: value} of every tensor the checkpoint `prefix` holds, less the save counter (it counts saves, not
  training) and the object graph."""
  return {name: tf.train.load_variable(str(prefix), name) for name, _ in tf.train.list_variables(str(prefix))
          if not name.startswith("_CHECKPOINTABLE") and "save_counter" not in name}



def interrupted_copy(straight_workdir: str, workdir: str, step: int) -> None:
  """Makes `workdir` a copy of `straight_workdir` as a run killed right after saving `step` leaves it: the later
  checkpoints gone and the `checkpoint` index listing `step` last (the bytes the uninterrupted run wrote up to
  `step`: a resume from there must end where the uninterrupted run ended, with one run less to trace than training
  a separate interrupted run)."""
  shutil.copytree(straight_workdir, workdir)
  directory = workdir_lib.checkpoint_dir(workdir)
  kept = []
  for name in sorted(os.listdir(directory)):
    match = re.match(r"ckpt-(\d+)\.", name)
    if match and int(match.group(1)) > step:
      os.remove(os.path.join(directory, name))
    elif match and name.endswith(".index"):
      kept.append(int(match.group(1)))
  paths = [os.path.join(directory, f"ckpt-{s}") for s in sorted(kept)]
  tf.compat.v1.train.update_checkpoint_state(directory, paths[-1], all_model_checkpoint_paths=paths)
  assert tf.train.latest_checkpoint(directory).endswith(f"ckpt-{step}")


def tool_command(tool, argv, monkeypatch, capsys):
  """What `python -m gan_dist.<tool> ARGV` does once started (cli.run: its flags parsed, errors in one line, then
  `cli.guard(tool.main)`), in this process, on a private FlagValues: (exit code, stderr)."""
  fv = flags.FlagValues()
  cli.define_config_flags(fv)
  tool.define_flags(fv)
  monkeypatch.setattr(cli, "FLAGS", fv)
  name = tool.__name__.rpartition(".")[2]
  try:
    cli.parse_flags([name, *argv])
    code = cli.guard(tool.main)([name])
  except SystemExit as e:
    code = e.code
  return code or 0, capsys.readouterr().err


def truncate_file(path: str) -> None:
  """Damages a file as a crash mid-write does: cut to half its size."""
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def flip_byte(path: str) -> None:
  """Damages a file as a bad disk does: one byte in its middle inverted, the size unchanged."""
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


def overwrite_with_garbage(path: str) -> None:
  with open(path, "wb") as f:
    f.write(b"not an index" * 10)


def keep_as_best(workdir: str, step: int, change=None) -> str:
  """Keeps checkpoint `step` of `workdir` as its best, as the trainer does (checkpoint.Checkpointer.save_best: a
  CheckpointManager in checkpoints/best/ and best.json), after `change(state)` if given (a best that differs from the
  regular checkpoints); returns the best checkpoint's path."""
  run = inference.load(workdir, step)
  if change is not None:
    change(run.state)
  path = tf.train.CheckpointManager(checkpoint_lib.make_checkpoint(run.state), workdir_lib.best_dir(workdir),
                                    max_to_keep=1, checkpoint_name="best").save(checkpoint_number=step)
  files.write_atomic(f"{workdir_lib.best_dir(workdir)}/best.json",
                     json.dumps({"step": step, "metric": "fcd", "value": 1.0, "checkpoint": path}))
  return path


def scale_generators(factor: float):
  """A `change` for keep_as_best: every weight of G (and of its EMA copy) times `factor`."""
  def change(state):
    for model in (state.gan.generator, state.ema_generator):
      if model is not None:
        model.set_weights([w * factor for w in model.get_weights()])
  return change


def train_parts(cfg, strategy):
  """(state, distributed dataset, train step) of `cfg` on `strategy`, built as train.run builds them (no workdir
  written)."""
  source = data.open_source(cfg)
  state = state_lib.create_state(cfg, strategy, source.num_classes)
  dataset = strategy.distribute_datasets_from_function(data.make_dataset_fn(cfg, source, state.gan.image_shape))
  return state, dataset, train_step_lib.make_train_step(cfg, strategy, state)


def train_setup(cfg, strategy):
  """(state, iterator, train step): `train_parts` with the dataset's iterator from its first batch."""
  state, dataset, train_step = train_parts(cfg, strategy)
  return state, iter(dataset), train_step


def replica_values(var):
  """Per-replica copies of a mirrored variable (Keras-wrapped or a tf.Variable)."""
  inner = getattr(var, "value", var)
  if callable(inner):  # tf.Variable.value is a method: the variable is the distributed one itself.
    inner = var
  return [v.numpy() for v in getattr(inner, "values", (inner,))]


FINGERPRINT = re.compile(r"Checkpoint step (\d+) fingerprint ([0-9a-f]+) \(worker (\d+)\)")


def worker_fingerprints(workdir, step) -> dict:
  """{worker: checkpoint fingerprint} logged at `step` in the worker logs that launch/local.sh kept in workdir/logs."""
  found = {}
  for name in sorted(os.listdir(os.path.join(workdir, "logs"))):
    with open(os.path.join(workdir, "logs", name)) as f:
      for m in FINGERPRINT.finditer(f.read()):
        if int(m.group(1)) == step:
          found[int(m.group(3))] = m.group(2)
  return found
