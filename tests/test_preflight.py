"""The checks before a run writes anything, one by one (tests/test_main.py runs them through the CLI's entry)."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import errors
from gan_dist import preflight
from gan_dist import state as state_lib
from gan_dist import workdir as workdir_lib
from tests import helpers


def test_profile_range_parses_first_last_and_refuses_the_rest(tmp_path):
  # (check_config's unknown --arch: tests/models/test_custom_arch.py.)
  assert preflight.profile_range(helpers.config(tmp_path, profile_steps="")) is None
  assert preflight.profile_range(helpers.config(tmp_path, profile_steps="3,7")) == (3, 7)
  for bad in ("7,3", "0,2", "5", "a,b"):
    with pytest.raises(errors.UserError, match="must be FIRST,LAST"):
      preflight.profile_range(helpers.config(tmp_path, profile_steps=bad))


def test_num_cpu_replicas_is_refused_with_one_device(tmp_path):
  """--strategy=one_device trains one replica: a CPU split asked beside it would be accepted and do nothing."""
  preflight.check_config(helpers.config(tmp_path, strategy="mirrored", num_cpu_replicas=2))
  with pytest.raises(errors.UserError, match=r"^--num_cpu_replicas=2 splits the CPU into replicas of "
                                             r"--strategy=mirrored; --strategy=one_device runs one"):
    preflight.check_config(helpers.config(tmp_path, strategy="one_device", num_cpu_replicas=2))
  assert not os.path.exists(str(tmp_path / "workdir"))


def test_communication_is_refused_by_the_strategies_that_do_not_take_it(tmp_path):
  """--communication chooses MultiWorkerMirroredStrategy's collectives: beside another strategy it would do nothing."""
  preflight.check_config(helpers.config(tmp_path, strategy="multi_worker_mirrored", communication="ring"))
  for strategy in ("mirrored", "one_device"):
    preflight.check_config(helpers.config(tmp_path, strategy=strategy, communication="auto"))
    with pytest.raises(errors.UserError, match=rf"^--communication=nccl chooses the collectives of "
                                               rf"--strategy=multi_worker_mirrored; --strategy={strategy} picks its "
                                               r"own \(NCCL between GPUs under mirrored\): drop --communication$"):
      preflight.check_config(helpers.config(tmp_path, strategy=strategy, communication="nccl"))
  assert not os.path.exists(str(tmp_path / "workdir"))


def test_the_global_batch_must_split_over_the_replicas(tmp_path, mirrored2):
  preflight.check_replicas(helpers.config(tmp_path, batch_size=8), mirrored2)
  with pytest.raises(errors.UserError, match=r"--batch_size=7 does not split evenly over the 2 replicas.*"
                                             r"--batch_size=6"):
    preflight.check_replicas(helpers.config(tmp_path, batch_size=7), mirrored2)
  # --mode_seeking_weight pairs rows 2k and 2k+1: each replica's rows must hold whole pairs.
  preflight.check_replicas(helpers.config(tmp_path, batch_size=8, mode_seeking_weight=1.0), mirrored2)
  with pytest.raises(errors.UserError, match=r"--mode_seeking_weight needs an even batch on each replica.*"
                                             r"--batch_size=6 gives 3 on each of the 2 replicas: use --batch_size=4"):
    preflight.check_replicas(helpers.config(tmp_path, batch_size=6, mode_seeking_weight=1.0), mirrored2)


class _Source:
  name, num_classes = "fixture", 10


def test_resolve_config_takes_the_classes_from_the_data(tmp_path):
  assert preflight.resolve_config(helpers.config(tmp_path), _Source()).num_classes == 10
  assert preflight.resolve_config(helpers.config(tmp_path, num_classes=12), _Source()).num_classes == 12
  with pytest.raises(errors.UserError, match="--num_classes=4 is below the 10 classes of fixture"):
    preflight.resolve_config(helpers.config(tmp_path, num_classes=4), _Source())


def test_check_workdir_compares_the_latest_flags_of_a_workdir_with_a_checkpoint_and_writes_nothing(tmp_path):
  cfg = helpers.config(tmp_path, arch="mlp")

  def check(run_cfg):
    """check_workdir, which must leave everything under tmp_path as it was, whether it passes or refuses."""
    before = helpers.snapshot(str(tmp_path))
    try:
      preflight.check_workdir(run_cfg)
    finally:
      assert helpers.snapshot(str(tmp_path)) == before

  check(cfg)  # A workdir that does not exist yet is fine, and is not created by the check.
  assert not os.path.exists(cfg.workdir)
  workdir_lib.write_config(cfg, workdir_lib.flags_path(cfg.workdir))
  # flags.txt alone (a run stopped before its first save, --train_steps=0 to prepare data) binds nothing.
  check(cfg.replace(arch="dcgan"))
  os.makedirs(workdir_lib.checkpoint_dir(cfg.workdir))
  open(os.path.join(workdir_lib.checkpoint_dir(cfg.workdir), "ckpt-2.index"), "w").close()
  check(cfg.replace(train_steps=50))
  with pytest.raises(errors.UserError, match=r"another model configuration: --arch \(workdir has 'mlp'"):
    check(cfg.replace(arch="dcgan"))
  # A resume that changed the data position on purpose: the same command again (without the flag) continues, and
  # going back to the first run's batch is the change.
  workdir_lib.write_config(cfg.replace(batch_size=16, allow_data_position_change=True),
                           workdir_lib.latest_flags_path(cfg.workdir))
  check(cfg.replace(batch_size=16))
  with pytest.raises(errors.UserError, match=r"--batch_size \(workdir has 16, this run 8\)"):
    check(cfg)
  (tmp_path / "file").write_text("")
  with pytest.raises(errors.UserError, match="is a file, not a directory"):
    check(cfg.replace(workdir=str(tmp_path / "file" / "run")))


def test_check_workdir_refuses_a_workdir_inside_the_image_folder_it_trains_on(tmp_path):
  """A workdir inside --data_dir (the folder itself, a subfolder, or a link to it) would have its sample grids
  listed as training images at the next start, a class of their own. Any other folder dataset layout is fine."""
  images = helpers.make_image_folder(str(tmp_path / "images"), num=6, bad=())["root"]
  os.symlink(images, str(tmp_path / "link"))
  cfg = helpers.config(tmp_path, arch="mlp", dataset="folder", data_dir=images)
  before = helpers.snapshot(str(tmp_path))
  for workdir in (images, images + "/", os.path.join(images, "runs", "a"), str(tmp_path / "link" / "run"),
                  os.path.join(images, "..", "images", "run")):
    with pytest.raises(errors.UserError, match=r"is inside --data_dir=.*: the run's sample grids would become "
                                               "training images; put the workdir outside the image folder"):
      preflight.check_workdir(cfg.replace(workdir=workdir))
  preflight.check_workdir(cfg.replace(workdir=str(tmp_path / "images_run")))  # A sibling whose name extends it.
  preflight.check_workdir(cfg.replace(workdir=os.path.join(images, "run"), dataset="mnist"))  # Not a listing.
  assert helpers.snapshot(str(tmp_path)) == before


def test_check_model_refuses_a_filesystem_without_room_for_two_checkpoints(tmp_path, one_device, monkeypatch):
  cfg = helpers.config(tmp_path, arch="mlp", latent_dim=8)
  state = state_lib.create_state(cfg, one_device, 10)
  size = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in state.variables())
  needed = 2 * size + preflight.DISK_MARGIN_BYTES
  free = needed - 1000
  monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * needed, 0, free))
  with pytest.raises(errors.UserError, match=rf"^--workdir={cfg.workdir}: its filesystem has "
                                             rf"{free / 2**20:.1f} MiB free, but a checkpoint of this run takes "
                                             rf"{size / 2**20:.1f} MiB"):
    preflight.check_model(cfg, state)
  preflight.check_model(cfg, state, reclaimable_bytes=1000)  # What the run deletes first counts as free.


def test_check_model_refuses_a_class_filter_for_a_conditional_model(tmp_path, one_device):
  cfg = helpers.config(tmp_path, arch="cgan_mlp", latent_dim=8, class_filter=3)
  state = state_lib.create_state(cfg, one_device, 10)
  with pytest.raises(errors.UserError, match="--class_filter=3 keeps one class, but --arch=cgan_mlp is conditional"):
    preflight.check_model(cfg, state)
  preflight.check_model(cfg.replace(class_filter=-1), state)
