"""A run directory's layout and its flags.txt."""

import pytest

from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import workdir as workdir_lib


def test_paths_of_a_run_directory():
  assert workdir_lib.flags_path("gs://b/run/") == "gs://b/run/flags.txt"
  assert workdir_lib.checkpoint_dir("W") == "W/checkpoints"
  assert workdir_lib.best_dir("W") == "W/checkpoints/best"
  assert workdir_lib.tensorboard_dir("W") == "W/tensorboard"
  assert workdir_lib.sample_grid_path("W", 120) == "W/samples/step_00000120.png"


@pytest.mark.parametrize("root", ["local", "ram://gan_dist_test_workdir"])
def test_flags_txt_roundtrip(tmp_path, root):
  base = str(tmp_path) if root == "local" else root
  cfg = config_lib.make_config(arch="dcgan", batch_size=32, sync_batchnorm=False, g_lr=3e-4, workdir=base)
  workdir_lib.write_config(cfg, workdir_lib.flags_path(base))
  assert workdir_lib.read_run_config(base) == cfg
  assert workdir_lib.read_run_config(base, batch_size=8).batch_size == 8


def test_the_tools_read_the_latest_run_s_flags(tmp_path):
  """A resumed run keeps flags.txt and writes flags_latest.txt (train.write_flags): e.g. a --data_dir that moved."""
  base = str(tmp_path)
  cfg = config_lib.make_config(arch="mlp", data_dir="/old", workdir=base)
  workdir_lib.write_config(cfg, workdir_lib.flags_path(base))
  workdir_lib.write_config(cfg.replace(data_dir="/new", train_steps=9),
                           f"{base}/{workdir_lib.LATEST_FLAGS_FILE}")
  assert workdir_lib.read_run_config(base) == cfg.replace(data_dir="/new", train_steps=9)


def test_a_directory_without_flags_txt_is_not_a_workdir(tmp_path):
  # A tool run without --workdir looks in the trainer's default: the message says where that came from.
  with pytest.raises(errors.UserError, match=r"flags.txt not found: is this a gan_dist workdir\? \(--workdir names "
                                             r"the directory a run trained in; without it, the trainer's default "
                                             r"/tmp/gan_dist\)"):
    workdir_lib.read_run_config(str(tmp_path))


def test_class_names_roundtrip_and_the_classes_the_data_did_not_name(tmp_path, caplog):
  """Label k is names[k]; "" for a class the data did not name (a --num_classes above the data's, no classes.json);
  a classes.json that is not a list of strings is ignored with a warning: names are for people, no tool fails."""
  workdir = str(tmp_path / "run")
  assert workdir_lib.read_class_names(workdir, 3) == ["", "", ""]
  workdir_lib.write_class_names(workdir, ["bird", "cat", "chien é"])
  assert (tmp_path / "run" / "classes.json").exists()
  assert workdir_lib.read_class_names(workdir, 3) == ["bird", "cat", "chien é"]
  assert workdir_lib.read_class_names(workdir, 4) == ["bird", "cat", "chien é", ""]
  assert workdir_lib.read_class_names(workdir, 0) == []
  for damaged in ('{"bird": 0}', "[1, 2]", "not json", b"\xff\xfe"):
    (tmp_path / "run" / "classes.json").write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    caplog.clear()
    assert workdir_lib.read_class_names(workdir, 2) == ["", ""]
    assert "is not a JSON list of class names" in caplog.text, damaged
