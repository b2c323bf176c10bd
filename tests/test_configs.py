"""Every configs/*.cfg trains 2 steps on 2 mirrored CPU replicas to a checkpoint and a sample grid PNG.

In-process (one MirroredStrategy, no interpreter start per config): the cfg is parsed into a fresh FlagValues exactly
as `python -m gan_dist.main --flagfile=...` would, with only the run's size and location overridden.
"""

import glob
import importlib
import os

import pytest
import tensorflow as tf

from gan_dist import flags as gan_flags
from gan_dist import train

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.cfg")))
STEPS = 2


def test_the_issue_configs_exist():
  names = {os.path.basename(p) for p in CONFIGS}
  assert {"dcgan.cfg", "mlp_gan.cfg", "cgan.cfg", "dcgan_upsample.cfg", "dcgan64_digit5.cfg", "cdcgan.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_trains_to_a_checkpoint_and_a_sample_grid(path, tmp_path, mnist_dir, mirrored2):
  workdir = str(tmp_path / "workdir")
  fv = gan_flags._fresh_flag_values([  # pylint: disable=protected-access
      f"--flagfile={path}", f"--train_steps={STEPS}", "--batch_size=8", f"--data_dir={mnist_dir}",
      "--strategy=mirrored", "--num_cpu_replicas=2", f"--workdir={workdir}", "--sample_every=1000000",
      "--checkpoint_every=1000000", "--num_samples=20"])
  cfg = gan_flags.config_from_flags(fv)
  assert cfg.dataset == "mnist" and cfg.arch  # The cfg itself was read.

  metrics = train.run(cfg, mirrored2)

  assert metrics["step"] == STEPS
  assert os.path.exists(os.path.join(workdir, "checkpoints", f"ckpt-{STEPS}.index"))
  png = os.path.join(workdir, "samples", f"step_{STEPS:08d}.png")
  grid = tf.io.decode_png(tf.io.read_file(png))
  saved = gan_flags.config_from_flagfile(os.path.join(workdir, "flags.txt"))
  assert saved.arch == cfg.arch
  height, width, channels = importlib.import_module(f"gan_dist.models.{cfg.arch}").IMAGE_SHAPE
  assert grid.shape[0] % height == 0 and grid.shape[1] % width == 0 and grid.shape[0] > 0
  assert grid.shape[2] == channels
