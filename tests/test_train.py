"""The trainer loop in this process: preemption by SIGTERM, divergence, window means and the time split, profiling.

The multi-process behaviours (2 workers, SIGKILL at random instants, dead and frozen peers) are in
tests/test_multiworker.py and tests/test_crash_safety.py.
"""

import dataclasses
import glob
import os
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import workdir as workdir_lib
from gan_dist import errors
from gan_dist import state as state_lib
from gan_dist import train
from gan_dist import train_step as train_step_lib
from tests import helpers


@pytest.fixture
def idx_dir(tmp_path):
  return helpers.make_idx_dir(str(tmp_path / "idx"), num=64)


def _signal_during_call(monkeypatch, call: int, signum=signal.SIGTERM, delay_s=0.02):
  """Makes the train step's `call`-th invocation receive `signum` `delay_s` after it started (mid-chunk)."""
  real = train_step_lib.make_train_step
  calls = []

  def make(*args, **kwargs):
    step = real(*args, **kwargs)

    def wrapped(iterator, num_steps, stop=lambda: False):
      calls.append(num_steps)
      if len(calls) == call:
        threading.Timer(delay_s, os.kill, (os.getpid(), signum)).start()
      return step(iterator, num_steps, stop)
    return wrapped

  monkeypatch.setattr(train_step_lib, "make_train_step", make)
  return calls


def test_sigterm_mid_chunk_saves_that_chunk_and_stops(tmp_path, idx_dir, mirrored2, monkeypatch):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=200, steps_per_loop=40,
                       checkpoint_every=1000, summary_every=1000)
  _signal_during_call(monkeypatch, call=2)
  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(errors.Preempted) as raised:
    train.run(cfg, mirrored2)
  assert raised.value.step == 80  # The chunk of steps 41-80 was running: it is finished, then saved.
  assert raised.value.exit_code == errors.EXIT_PREEMPTED == 75
  assert "SIGTERM received: saved a checkpoint at step 80" in str(raised.value)
  assert signal.getsignal(signal.SIGTERM) is previous  # The handler is only installed while training.
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  assert tf.train.latest_checkpoint(ckpt).endswith("ckpt-80")
  monkeypatch.undo()
  assert train.run(cfg, mirrored2)["step"] == 200  # The same command continues to --train_steps exactly.
  assert int(tf.train.load_variable(os.path.join(ckpt, "ckpt-200"), "step/.ATTRIBUTES/VARIABLE_VALUE")) == 200


def test_divergence_stops_without_saving_and_keeps_the_last_good_checkpoint(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=4, steps_per_loop=2, checkpoint_every=2,
                       summary_every=2)
  train.run(cfg, mirrored2)
  # Resumed with absurd learning rates (allowed on resume): the weights blow up to inf/NaN within a chunk.
  blown = dataclasses.replace(cfg, train_steps=20, g_lr=1e38, d_lr=1e38)
  with pytest.raises(errors.DivergedError) as raised:
    train.run(blown, mirrored2)
  message = str(raised.value)
  assert raised.value.exit_code == errors.EXIT_DIVERGED
  assert "became non-finite between step 5 and step 6" in message, message
  assert "the last good checkpoint, step 4, is kept" in message and "\n" not in message
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  assert tf.train.latest_checkpoint(ckpt).endswith("ckpt-4")  # Nothing non-finite was saved...
  reader = tf.train.load_checkpoint(os.path.join(ckpt, "ckpt-4"))
  for name in reader.get_variable_to_shape_map():  # ...and the kept one restores with finite weights.
    value = reader.get_tensor(name)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      assert np.isfinite(value).all(), name


def test_summaries_are_window_means_and_log_the_time_split(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=6, steps_per_loop=1, summary_every=3,
                       sample_every=3, checkpoint_every=3)
  metrics = train.run(cfg, mirrored2)
  assert metrics["step"] == 6
  for name in ("time/train", "time/checkpoints", "time/samples", "time/eval", "time/summaries"):
    assert 0.0 <= metrics[name] <= 1.0, name
  assert metrics["time/train"] > 0 and metrics["time/checkpoints"] > 0
  assert abs(sum(metrics[f"time/{n}"] for n in train._Window.ACTIVITIES) - 1.0) < 1e-6  # pylint: disable=protected-access
  # The logged d_loss is the mean of the window's 3 steps: the TensorBoard value at step 6 equals it.
  events = glob.glob(os.path.join(cfg.workdir, "tensorboard", "events.*"))
  logged = [v.simple_value or tf.make_ndarray(v.tensor) for path in events
            for e in tf.compat.v1.train.summary_iterator(path) if e.step == 6
            for v in e.summary.value if v.tag == "d_loss"]
  assert logged and float(logged[0]) == pytest.approx(metrics["d_loss"], rel=1e-6)


def test_profile_steps_write_a_trace(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=4, steps_per_loop=4, summary_every=4,
                       profile_steps="2,3")
  train.run(cfg, mirrored2)
  assert glob.glob(os.path.join(cfg.workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))


def test_best_checkpoint_keeps_the_lowest_value(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=2)
  train.run(cfg, mirrored2)
  state = state_lib.create_state(cfg, mirrored2, 10)
  checkpointer = checkpoint_lib.Checkpointer(cfg, state, mirrored2)
  assert checkpointer.save_best(2, "fcd", 5.0) is not None
  assert checkpointer.save_best(3, "fcd", 7.0) is None  # Worse: the best stays.
  assert checkpoint_lib.read_best(cfg.workdir)["step"] == 2
  assert checkpointer.save_best(4, "fcd", 1.5) is not None
  best = checkpoint_lib.read_best(cfg.workdir)
  assert (best["step"], best["value"]) == (4, 1.5) and tf.io.gfile.exists(best["checkpoint"] + ".index")
  assert len(glob.glob(os.path.join(workdir_lib.best_dir(cfg.workdir), "*.index"))) == 1


def test_native_image_size_spelled_out_or_left_at_0_is_the_same_run(tmp_path, idx_dir, mirrored2):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=1)
  train.run(cfg, mirrored2)
  saved = workdir_lib.read_config(os.path.join(cfg.workdir, "flags.txt"))
  assert (saved.image_size, saved.channels) == (28, 1)  # The resolved shape, not 0.
  assert train.run(dataclasses.replace(cfg, train_steps=2, image_size=28, channels=1), mirrored2)["step"] == 2
  assert train.run(dataclasses.replace(cfg, train_steps=3), mirrored2)["step"] == 3
