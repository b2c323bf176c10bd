"""A whole life of a run with every path on TensorFlow's in-memory ram:// filesystem, within one process: data,
training, resume, sampling, export and the figures. Anything that bypassed tf.io.gfile (open, os.path, shutil)
would fail to find or write these paths."""

import dataclasses
import io
import logging

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import exporter
from gan_dist import inference
from gan_dist import plots
from gan_dist import sample as sample_lib
from gan_dist import sampling
from gan_dist import summaries
from gan_dist import train
from tests import helpers
from tests.serve import workdirs


def _copy_tree_to_ram(local: str, remote: str) -> None:
  for directory, _, files in tf.io.gfile.walk(local):
    target = remote + directory[len(local):]
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(f"{directory}/{name}", f"{target}/{name}", overwrite=True)


def test_a_trained_workdir_on_ram_filesystem_loads_and_samples_there(tmp_path_factory):
  """The fast tier's share: a trained workdir copied to ram:// is opened and sampled from there."""
  root = "ram://gan_dist_fast"
  _copy_tree_to_ram(workdirs.trained("unconditional", tmp_path_factory), f"{root}/workdir")
  run = inference.load(f"{root}/workdir")
  assert run.step == 1 and run.cfg.arch == "mlp"
  arrays = sample_lib.sample(run, 4, seed=1)
  sample_lib.write_npz(f"{root}/out/samples.npz", arrays)
  with tf.io.gfile.GFile(f"{root}/out/samples.npz", "rb") as f:
    np.testing.assert_array_equal(np.load(io.BytesIO(f.read()))["images"], arrays["images"])
  summaries.write_png(f"{root}/out/grid.png", sample_lib.grid_image(run, 4, 1, None, arrays["images"]))
  assert tf.io.gfile.exists(f"{root}/out/grid.png")


@pytest.mark.slow
def test_train_resume_sample_export_and_plot_on_ram_filesystem(tmp_path, one_device, caplog):
  root = "ram://gan_dist_e2e"
  _copy_tree_to_ram(helpers.make_idx_dir(str(tmp_path / "idx"), num=64), f"{root}/data")
  workdir = f"{root}/workdir"
  # The smallest model on one replica: what is tested is where every file goes, not the network or the replicas.
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=f"{root}/data", workdir=workdir, train_steps=2,
                       checkpoint_every=2, sample_every=2, summary_every=1, ema_decay=0.9, latent_dim=16)

  assert train.run(cfg, one_device)["step"] == 2
  assert tf.io.gfile.exists(f"{workdir}/flags.txt")
  assert tf.io.gfile.exists(f"{workdir}/checkpoints/ckpt-2.index")
  assert tf.io.gfile.exists(f"{workdir}/samples/step_00000002.png")
  assert tf.io.gfile.glob(f"{workdir}/tensorboard/events.out.tfevents.*")

  # Resume: the same command with more steps continues from the ram:// checkpoint.
  cfg = dataclasses.replace(cfg, train_steps=4)
  with caplog.at_level(logging.INFO, logger="absl"):
    assert train.run(cfg, one_device)["step"] == 4
  assert f"Resumed from {workdir}/checkpoints/ckpt-2 at step 2" in caplog.text  # Not a restart that also ends at 4.
  assert tf.io.gfile.exists(f"{workdir}/checkpoints/ckpt-4.index")
  assert tf.io.gfile.exists(f"{workdir}/flags_latest.txt")

  # Sample (what `python -m gan_dist.sample --out=ram://... --grid=ram://...` does).
  run = inference.load(workdir)
  assert run.step == 4
  arrays = sample_lib.sample(run, 8, seed=1)
  sample_lib.write_npz(f"{root}/out/samples.npz", arrays)
  with tf.io.gfile.GFile(f"{root}/out/samples.npz", "rb") as f:
    assert np.load(io.BytesIO(f.read()))["images"].shape == (8, 28, 28, 1)
  summaries.write_png(f"{root}/out/grid.png", sample_lib.grid_image(run, 8, 1, None, arrays["images"]))
  assert tf.io.gfile.exists(f"{root}/out/grid.png")

  # Export, both formats, and load the SavedModel back from ram://.
  exporter.export(workdir, f"{root}/out/export", fmt="saved_model")
  loaded = tf.saved_model.load(f"{root}/out/export")
  out = loaded.signatures["serving_default"](noise=tf.constant(sampling.noise(8, 16, 1, truncation=0.0)))
  assert out["images"].dtype == tf.uint8 and out["images"].shape == (8, 28, 28, 1)
  assert exporter.read_facts(f"{root}/out/export")["latent_dim"] == 16
  exporter.export(workdir, f"{root}/out/generator.keras", fmt="keras")
  assert tf.io.gfile.exists(f"{root}/out/generator.keras")

  # Figures read the event files and the sample grids from ram:// and write there.
  written = plots.write_all(workdir, f"{root}/out/plots")
  assert written and all(tf.io.gfile.exists(p) for p in written.values()), written
