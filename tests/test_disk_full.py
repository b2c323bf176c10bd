"""A filesystem that fills up during a run: the failed save is one line with its own exit code, the previous
checkpoint stays intact and named, and once space is freed the same command resumes (the failed save's leftovers
do not count against the space check). On a real, small tmpfs (needs the right to mount; skipped otherwise)."""

import dataclasses
import os
import re
import shutil
import subprocess

import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import errors
from gan_dist import main
from gan_dist import preflight
from tests import helpers

SIZE_MIB = 48


@pytest.fixture
def small_filesystem(tmp_path):
  mount = tmp_path / "small"
  mount.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(mount)],
                        capture_output=True, text=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory, leave_bytes):
  """Writes a file that leaves `leave_bytes` free on the filesystem of `directory`."""
  stat = os.statvfs(directory)
  size = stat.f_bavail * stat.f_frsize - leave_bytes
  with open(os.path.join(directory, "filler"), "wb") as f:
    f.truncate(0)
    chunk = b"\0" * (1 << 20)
    while size > 0:
      f.write(chunk[:min(size, len(chunk))])
      size -= len(chunk)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run(tmp_path, small_filesystem, one_device, monkeypatch, capsys):
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  cfg = helpers.config(tmp_path, arch="dcgan_upsample", data_dir=idx, strategy="one_device", train_steps=4,
                       steps_per_loop=2, checkpoint_every=2, workdir=str(small_filesystem / "run"))
  monkeypatch.setattr(preflight, "DISK_MARGIN_BYTES", 0)  # A 48 MiB filesystem: no room for the usual margin.
  save = checkpoint_lib.Checkpointer.save

  def save_after_filling(self, step):
    if step == 4:  # Another program fills the disk after the first checkpoint.
      _fill(str(small_filesystem), leave_bytes=1 << 20)
    return save(self, step)

  monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", save_after_filling)
  code = main.run_cli(cfg, make_strategy=lambda _: one_device)
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert code == errors.EXIT_DISK_FULL == 74, err
  assert len(lines) == 1 and "Traceback" not in err, err
  ckpt_dir = f"{cfg.workdir}/checkpoints"
  assert re.search(rf"no space left to save the checkpoint of step 4 \(\d+\.\d MiB\) on the filesystem "
                   rf"{small_filesystem} \(holding {ckpt_dir}; \d+\.\d MiB free\)", lines[0]), lines
  assert f"the last checkpoint, {ckpt_dir}/ckpt-2, is intact" in lines[0], lines
  assert tf.train.latest_checkpoint(ckpt_dir) == f"{ckpt_dir}/ckpt-2"
  assert not [n for n in os.listdir(ckpt_dir) if n.startswith("ckpt-4")], os.listdir(ckpt_dir)
  values = helpers.checkpoint_values(f"{ckpt_dir}/ckpt-2")  # Intact: it reads back, at step 2.
  assert int(values["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 2

  # Space freed; a save that another kill interrupted left a leftover as big as the free space allows: it is
  # counted as free by the start-up check, removed, and the same command resumes and finishes.
  os.remove(small_filesystem / "filler")
  os.makedirs(f"{ckpt_dir}/ckpt-4_temp")
  _fill(f"{ckpt_dir}/ckpt-4_temp", leave_bytes=4 << 20)
  checkpoint_bytes = sum(os.path.getsize(f"{ckpt_dir}/{n}") for n in os.listdir(ckpt_dir) if n.startswith("ckpt-2."))
  assert shutil.disk_usage(small_filesystem).free < 2 * checkpoint_bytes  # Refused, without the leftover counted.
  monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", save)
  assert main.run_cli(dataclasses.replace(cfg), make_strategy=lambda _: one_device) == errors.EXIT_OK
  assert tf.train.latest_checkpoint(ckpt_dir) == f"{ckpt_dir}/ckpt-4"
  assert not os.path.exists(f"{ckpt_dir}/ckpt-4_temp")
