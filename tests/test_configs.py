"""Every configs/*.cfg trains 2 steps to a checkpoint and a sample grid PNG: the main ones (MIRRORED) on 2 mirrored
CPU replicas, the others on one device (the number of replicas is not what a config decides). Two configs are the
run of another here, which trains in their place (SAME_RUN; their files' values are checked all the same):
cdcgan_fast.cfg differs from cdcgan_quick.cfg only in numbers (learning rates, batch size, steps), and faces64.cfg
is small64.cfg without its ADA augmentation (the same ResNet at 64x64 on the same data; runs without augmentation:
every other config).

In-process (one MirroredStrategy, no interpreter start per config): the cfg is parsed into a fresh FlagValues exactly
as `python -m gan_dist.main --flagfile=...` would, with only the run's size and location overridden.
"""

import contextlib
import dataclasses
import glob
import os

import pytest
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import state as state_lib
from gan_dist import workdir as workdir_lib
from gan_dist import train
from tests import helpers

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.cfg")))
STEPS = 2
# Trained on 2 mirrored replicas (sync BatchNorm, unconditional and conditional); the rest on one device.
MIRRORED = ("dcgan.cfg", "cdcgan.cfg")
# Not marked slow: one quick config keeps a real training run in the fast tier.
FAST = ("mlp_gan.cfg",)
# {config: (the config trained in its place, flags whose values the two files may set differently, flags only that
# one sets)}: the differing values are numbers of the optimiser or of the run's length, and what the other one adds
# is a step the untrained config's run leaves out: the trained run executes all of the untrained one's code
# (test_untrained_config_is_the_run_of_the_config_trained_in_its_place holds them to it).
SAME_RUN = {"cdcgan_fast.cfg": ("cdcgan_quick.cfg", {"batch_size", "g_lr", "d_lr", "train_steps"}, set()),
            "faces64.cfg": ("small64.cfg", set(), {"augment", "ada_target", "ada_kimg"})}


def _train_params():
  for path in CONFIGS:
    name = os.path.basename(path)
    if name not in SAME_RUN:
      yield pytest.param(path, id=name, marks=() if name in FAST else pytest.mark.slow)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  """MNIST-like IDX files of 160 random 28x28 images, 16 of each digit label (enough for a class filter's batch):
  the configs' MNIST runs read them as they would read MNIST (its size and shape; 60,000 real digits would only
  take longer to index and shuffle)."""
  return helpers.make_idx_dir(str(tmp_path_factory.mktemp("idx")), num=160)


def test_the_issue_configs_exist():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {"dcgan.cfg", "mlp_gan.cfg", "cgan.cfg", "dcgan_upsample.cfg", "dcgan64_digit5.cfg", "cdcgan.cfg"} <= names


def _file_values(path):
  """{flag: value string} a flagfile sets, nested --flagfile lines first (absl: the last value wins)."""
  values = {}
  for line in open(path).read().splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    assert line.startswith("--"), f"{path}: {line!r} is not a --flag line"
    name, _, value = line[2:].partition("=")
    if name == "flagfile":
      values.update(_file_values(os.path.join(os.path.dirname(CONFIG_DIR), value)))
    elif not value and name.startswith("no"):
      values[name[2:]] = "false"
    else:
      values[name] = value or "true"
  return values


def _as_string(value):
  return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_opens_with_its_documentation(path):
  header = []
  for line in open(path).read().splitlines():
    if not line.startswith("#"):
      break
    header.append(line)
  text = "\n".join(header)
  for part in ("Command:", "Reproduces:", "Expected:"):
    assert part in text, (path, part)
  assert f"--flagfile=configs/{os.path.basename(path)}" in text


def _run_config(path, data_dir, workdir, mirrored):
  """(the Config of the test's run of `path`, the Config of `path` as written, the flags the test overrides)."""
  placement = {"strategy": "mirrored", "num_cpu_replicas": "2"} if mirrored else {"strategy": "one_device"}
  # Small widths and no self-attention too: the ResNet configs (faces128: 64 channels, attention over 64x64
  # positions) would otherwise spend most of the suite's time here. Self-attention: tests/models/test_resnet.py.
  # Batches of 2 on each replica (even, as --mode_seeking_weight needs): a 128x128 step's time is per image.
  overrides = {"train_steps": str(STEPS), "batch_size": "4" if mirrored else "2", "data_dir": data_dir, **placement,
               "workdir": workdir, "sample_every": "1000000", "checkpoint_every": "1000000", "num_samples": "4",
               "g_channels": "4", "d_channels": "4", "attention_resolution": "0"}
  cfg = config_lib.from_args([f"--flagfile={path}", *[f"--{k}={v}" for k, v in overrides.items()]])
  as_written = config_lib.from_args([f"--flagfile={path}", f"--data_dir={data_dir}", f"--workdir={workdir}"])
  return cfg, as_written, overrides


def _check_file_values(path, cfg, as_written, overrides):
  """Every value the file sets is what the file alone gives, and what the run gets unless the test overrides it to
  keep the run small."""
  for name, value in _file_values(path).items():
    for parsed in (as_written,) if name in overrides else (as_written, cfg):
      got = getattr(parsed, name)
      expected = type(got)(float(value)) if isinstance(got, (int, float)) and not isinstance(got, bool) else value
      assert _as_string(got) == _as_string(expected), (name, got, value)


@pytest.mark.parametrize("path", _train_params())
def test_config_trains_to_a_checkpoint_and_a_sample_grid(path, tmp_path, idx_dir, request, monkeypatch):
  mirrored = os.path.basename(path) in MIRRORED
  strategy = request.getfixturevalue("mirrored2" if mirrored else "one_device")
  workdir = str(tmp_path / "workdir")
  dataset = _file_values(path).get("dataset", "mnist")
  data_context = contextlib.nullcontext()
  if dataset == "folder":  # A small tree of mixed image files stands for the user's folder.
    data_dir = helpers.make_image_folder(str(tmp_path / "images"), num=40)["root"]
  elif dataset in ("mnist", "fashion_mnist"):
    data_dir = idx_dir  # MNIST's layout and shape (Fashion-MNIST's too).
  else:  # A TFDS dataset (cifar10): TFDS's own mock examples, generated from the dataset's features offline.
    data_dir = ""
    data_context = helpers.mock_tfds(monkeypatch, num_examples=40)
  cfg, as_written, overrides = _run_config(path, data_dir, workdir, mirrored)
  _check_file_values(path, cfg, as_written, overrides)
  # The EMA generator's BatchNorm statistics (the configs with --ema_decay) from 16 noise vectors in 2 chunks, not
  # 512 in 8: the same re-estimation (tests/test_train_step.py checks its statistics), a 32nd of the images.
  monkeypatch.setattr(state_lib, "EMA_BATCHNORM_SAMPLES", 16)
  monkeypatch.setattr(state_lib, "EMA_BATCHNORM_CHUNK", 8)

  with data_context:
    metrics = train.run(cfg, strategy)

  assert metrics["step"] == STEPS
  assert strategy.num_replicas_in_sync == (2 if mirrored else 1)
  assert os.path.exists(os.path.join(workdir, "checkpoints", f"ckpt-{STEPS}.index"))
  png = os.path.join(workdir, "samples", f"step_{STEPS:08d}.png")
  grid = tf.io.decode_png(tf.io.read_file(png))
  saved = workdir_lib.read_config(os.path.join(workdir, "flags.txt"))
  # flags.txt holds the resolved config: the classes and the image shape the data and the architecture decided.
  assert saved == dataclasses.replace(cfg, num_classes=saved.num_classes, image_size=saved.image_size,
                                      channels=saved.channels)
  assert cfg.image_size in (0, saved.image_size) and cfg.channels in (0, saved.channels)
  side = saved.image_size
  assert grid.shape[0] % side == 0 and grid.shape[1] % side == 0 and grid.shape[0] > 0
  assert grid.shape[2] == saved.channels


@pytest.mark.parametrize("name", sorted(SAME_RUN))
def test_untrained_config_is_the_run_of_the_config_trained_in_its_place(name, tmp_path):
  path = os.path.join(CONFIG_DIR, name)
  twin, numbers, additions = SAME_RUN[name]
  twin_path = os.path.join(CONFIG_DIR, twin)
  assert twin not in SAME_RUN and twin_path in CONFIGS and (twin in MIRRORED) == (name in MIRRORED)
  # Its own file's values, as the training test checks them (on the run it would get).
  cfg, as_written, overrides = _run_config(path, "data", str(tmp_path / "workdir"), name in MIRRORED)
  _check_file_values(path, cfg, as_written, overrides)
  # Both files resolved: the same flags but for numbers, and for the additions only the trained one sets.
  mine, theirs = _file_values(path), _file_values(twin_path)
  differ = {k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)}
  assert differ <= numbers | additions and not additions & set(mine), (name, twin, differ)
  # ...and so are the two runs (the Configs this test's runs would get).
  twin_cfg, _, _ = _run_config(twin_path, "data", str(tmp_path / "workdir"), twin in MIRRORED)
  assert dataclasses.replace(cfg, **{k: getattr(twin_cfg, k) for k in numbers | additions}) == twin_cfg
