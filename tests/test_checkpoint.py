"""Checkpoint save and resume: an interrupted run continues exactly as an uninterrupted one."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import flags as gan_flags
from gan_dist import train
from tests import helpers


def _variables(ckpt_prefix):
  return {name: tf.train.load_variable(ckpt_prefix, name) for name, _ in tf.train.list_variables(ckpt_prefix)
          if not name.startswith("_CHECKPOINTABLE") and "save_counter" not in name}


@pytest.fixture
def idx_dir(tmp_path):
  return helpers.make_idx_dir(str(tmp_path / "idx"), num=64)


def test_resume_is_exact(tmp_path, idx_dir, mirrored2):
  base = helpers.config(tmp_path, data_dir=idx_dir, train_steps=4, steps_per_loop=2, checkpoint_every=2)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  train.run(straight, mirrored2)
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  train.run(dataclasses.replace(interrupted, train_steps=2), mirrored2)
  assert tf.train.latest_checkpoint(checkpoint_lib.checkpoint_dir(interrupted.workdir)).endswith("ckpt-2")
  metrics = train.run(interrupted, mirrored2)
  assert metrics["step"] == 4
  a = _variables(os.path.join(straight.workdir, "checkpoints", "ckpt-4"))
  b = _variables(os.path.join(interrupted.workdir, "checkpoints", "ckpt-4"))
  assert a.keys() == b.keys()
  # tf.train.Checkpoint stores each variable once, under its first path: D's weights appear under d_optimizer.
  names = " ".join(a)
  for part in ("generator", "g_optimizer", "d_optimizer", "step", "rng", "seed_states"):
    assert part in names, part
  # Weights, Adam slots, RNG and dropout seeds all continue exactly (data order is a function of seed and step).
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert int(tf.train.load_variable(os.path.join(straight.workdir, "checkpoints", "ckpt-4"),
                                    "step/.ATTRIBUTES/VARIABLE_VALUE")) == 4


def test_resume_stops_at_train_steps(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, data_dir=idx_dir, train_steps=2)
  train.run(cfg, mirrored2)
  assert train.run(cfg, mirrored2)["step"] == 2  # Nothing left to do.


def test_incompatible_workdir_is_refused(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, data_dir=idx_dir, train_steps=1)
  train.run(cfg, mirrored2)
  with pytest.raises(ValueError, match="--latent_dim: workdir has 100, this run has 64"):
    train.run(dataclasses.replace(cfg, latent_dim=64, train_steps=2), mirrored2)


def test_flagfile_roundtrip(tmp_path):
  cfg = gan_flags.make_config(arch="dcgan", batch_size=32, sync_batchnorm=False, g_lr=3e-4, workdir=str(tmp_path))
  path = str(tmp_path / "flags.txt")
  gan_flags.write_flagfile(cfg, path)
  assert gan_flags.config_from_flagfile(path) == cfg


def test_resume_compatibility_rules():
  saved = gan_flags.make_config(ema_decay=0.999)
  assert gan_flags.check_resume_compatible(saved, dataclasses.replace(saved, ema_decay=0.99)) is None
  assert gan_flags.check_resume_compatible(saved, dataclasses.replace(saved, batch_size=64, g_lr=1.0)) is None
  message = gan_flags.check_resume_compatible(saved, dataclasses.replace(saved, ema_decay=0.0, arch="mlp"))
  assert "--ema_decay" in message and "--arch" in message
