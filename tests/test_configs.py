"""Every configs/*.cfg trains 2 steps to a checkpoint and a sample grid PNG: the main ones (MIRRORED) on 2 mirrored
CPU replicas, the others on one device (the number of replicas is not what a config decides).

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


def _train_params():
  for path in CONFIGS:
    name = os.path.basename(path)
    yield pytest.param(path, id=name, marks=() if name in FAST else pytest.mark.slow)


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


@pytest.mark.parametrize("path", _train_params())
def test_config_trains_to_a_checkpoint_and_a_sample_grid(path, tmp_path, mnist_dir, request):
  mirrored = os.path.basename(path) in MIRRORED
  strategy = request.getfixturevalue("mirrored2" if mirrored else "one_device")
  workdir = str(tmp_path / "workdir")
  dataset = _file_values(path).get("dataset", "mnist")
  data_context = contextlib.nullcontext()
  if dataset == "folder":  # A small tree of mixed image files stands for the user's folder.
    data_dir = helpers.make_image_folder(str(tmp_path / "images"), num=40)["root"]
  elif dataset in ("mnist", "fashion_mnist"):
    data_dir = mnist_dir  # Fashion-MNIST has the same IDX layout and shape; MNIST's files stand in for it.
  else:  # A TFDS dataset (cifar10): TFDS's own mock examples, generated from the dataset's features offline.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    data_dir = ""
    data_context = tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE)
  placement = {"strategy": "mirrored", "num_cpu_replicas": "2"} if mirrored else {"strategy": "one_device"}
  # Small widths and no self-attention too: the ResNet configs (faces128: 64 channels, attention over 64x64
  # positions) would otherwise spend most of the suite's time here. Self-attention: tests/models/test_resnet.py.
  overrides = {"train_steps": str(STEPS), "batch_size": "8", "data_dir": data_dir, **placement, "workdir": workdir,
               "sample_every": "1000000", "checkpoint_every": "1000000", "num_samples": "20", "g_channels": "4",
               "d_channels": "4", "attention_resolution": "0"}
  cfg = config_lib.from_args([f"--flagfile={path}", *[f"--{k}={v}" for k, v in overrides.items()]])
  as_written = config_lib.from_args([f"--flagfile={path}", f"--data_dir={data_dir}", f"--workdir={workdir}"])
  # Every value the file sets is what the file alone gives, and what the run gets unless the test overrides it to
  # keep the run small.
  for name, value in _file_values(path).items():
    for parsed in (as_written,) if name in overrides else (as_written, cfg):
      got = getattr(parsed, name)
      expected = type(got)(float(value)) if isinstance(got, (int, float)) and not isinstance(got, bool) else value
      assert _as_string(got) == _as_string(expected), (name, got, value)

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
