"""Training on the new sources, end to end: a folder of mixed images (dcgan32, dcgan64 and the conditional cdcgan32
on its class folders), exact resume on folder data, and TFDS CIFAR-10 through mock_data. All on one device: the number
of replicas is not what these tests are about, and tracing one replica takes half the time of two (folder data on 2
workers: tests/test_multiworker.py; each replica's share of a global batch: tests/test_data.py)."""

import dataclasses
import logging as py_logging
import os

import numpy as np
import pytest

from gan_dist import workdir as workdir_lib
from gan_dist import train
from tests import helpers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_image_folder(str(tmp_path_factory.mktemp("images")), num=300)


@pytest.mark.slow
@pytest.mark.parametrize("arch,image_size", [("dcgan32", 0), ("dcgan64", 0), ("cdcgan32", 64)])
def test_architectures_train_on_a_folder_and_the_bad_files_are_reported(tmp_path, folder, one_device, caplog, arch,
                                                                        image_size):
  # In stored order the two bad files of bird/ are examples 0 and 1, so the first global batch reads both.
  cfg = helpers.config(tmp_path, dataset="folder", data_dir=folder["root"], arch=arch, image_size=image_size,
                       batch_size=8, train_steps=2, shuffle_files=False, random_flip=True, latent_dim=16)
  with caplog.at_level(py_logging.WARNING):
    metrics = train.run(cfg, one_device)
  assert metrics["step"] == 2 and np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["g_loss"])
  saved = workdir_lib.read_config(os.path.join(cfg.workdir, "flags.txt"))
  assert saved.num_classes == 3  # The three class folders (cdcgan32 conditions on them).
  reported = [r.getMessage() for r in caplog.records if "Skipped undecodable image file" in r.getMessage()]
  for path in folder["bad"]:
    assert any(path in line for line in reported), (path, reported)


@pytest.mark.slow
def test_resume_on_folder_data_is_exact(tmp_path, folder, one_device):
  """A 4-step run equals a 2-step run resumed for 2 more, bit for bit (shuffled order, flips, a bad file)."""
  base = helpers.config(tmp_path, dataset="folder", data_dir=folder["root"], arch="mlp", channels=3, batch_size=8,
                        train_steps=4, steps_per_loop=2, checkpoint_every=2, random_flip=True, latent_dim=16)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  train.run(straight, one_device)
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  helpers.interrupted_copy(straight.workdir, interrupted.workdir, 2)
  assert train.run(interrupted, one_device)["step"] == 4
  a = helpers.checkpoint_values(os.path.join(straight.workdir, "checkpoints", "ckpt-4"))
  b = helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-4"))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_cifar10_through_tfds_mock_trains_dcgan32(tmp_path, one_device, monkeypatch):
  cfg = helpers.config(tmp_path, dataset="cifar10", arch="dcgan32", batch_size=8, train_steps=3, latent_dim=16)
  with helpers.mock_tfds(monkeypatch, num_examples=40):
    metrics = train.run(cfg, one_device)
  assert metrics["step"] == 3 and np.isfinite(metrics["d_loss"])
  saved = workdir_lib.read_config(os.path.join(cfg.workdir, "flags.txt"))
  assert saved.num_classes == 10 and saved.dataset == "cifar10"


@pytest.mark.slow
def test_noskip_bad_images_is_one_line_and_exit_2_before_writing_at_start_and_keeps_checkpoints_mid_run(
    tmp_path, folder, one_device, capsys):
  """An undecodable file in the first batch is refused before the workdir is written (the run reads that batch
  first); one met later by the input pipeline still ends in one line naming it, exit 2, the checkpoints kept."""
  from gan_dist import data
  from gan_dist import errors
  from gan_dist import main as main_lib
  base = dict(dataset="folder", data_dir=folder["root"], arch="mlp", channels=3, batch_size=8, skip_bad_images=False,
              latent_dim=16)
  # In stored order the two bad files of bird/ are examples 0 and 1: the first batch.
  cfg = helpers.config(tmp_path / "first", train_steps=2, shuffle_files=False, **base)
  assert main_lib.run_cli(cfg, make_strategy=lambda _: one_device) == errors.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: gan_dist.data: undecodable image file"), err
  assert "bird/corrupt.jpg" in err[0]
  assert not os.path.exists(cfg.workdir)
  # Shuffled: the first global batch that holds one of them is batch (step) `met` > 0.
  cfg = helpers.config(tmp_path / "later", **base)
  num = folder["num_images"] + len(folder["bad"])
  batches = data.global_batch_indices(num, 8, cfg.seed).take(50)
  met = next(i for i, b in enumerate(batches.as_numpy_iterator()) if np.isin([0, 1], b).any())
  assert met > 0
  cfg = dataclasses.replace(cfg, train_steps=met + 1, steps_per_loop=met, checkpoint_every=met)
  assert main_lib.run_cli(cfg, make_strategy=lambda _: one_device) == errors.EXIT_USAGE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: gan_dist.data: undecodable image file"), err
  assert "bird/corrupt.jpg" in err[0] or "bird/empty.png" in err[0]
  assert sorted(os.listdir(os.path.join(cfg.workdir, "checkpoints")))[-1] == f"ckpt-{met}.index"
