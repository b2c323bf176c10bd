"""The trainer loop in this process: preemption by SIGTERM, divergence, window means and the time split, profiling.

The multi-process behaviours (2 workers, SIGKILL at random instants, dead and frozen peers) are in
tests/test_multiworker.py and tests/test_crash_safety.py.
"""

import dataclasses
import glob
import logging
import os
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import data
from gan_dist import workdir as workdir_lib
from gan_dist import errors
from gan_dist import figures
from gan_dist import inference
from gan_dist import models
from gan_dist import preflight
from gan_dist import summaries
from gan_dist import train
from gan_dist import train_step as train_step_lib
from tests import helpers


@pytest.fixture
def idx_dir(tmp_path):
  return helpers.make_idx_dir(str(tmp_path / "idx"), num=64)


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory, one_device):
  """The config of an mlp workdir trained 4 steps (chunks of 2, a checkpoint and a summary after each), copied by
  each test that resumes it."""
  root = tmp_path_factory.mktemp("four_steps")
  return helpers.trained_mlp(root, one_device, summary_every=2)


def _signal_during_call(monkeypatch, call: int, signum=signal.SIGTERM, delay_s=0.02):
  """Makes the train step's `call`-th invocation receive `signum` `delay_s` after it started (mid-chunk).

  Mid-chunk on CPUs: 40 mlp steps took 260-430 ms on 2-core EPYCs against the 20 ms timer. A chunk that ends first
  (a fast GPU, GAN_DIST_TEST_GPU=1) waits for the signal before the trainer asks whether to stop: what a signal that
  arrives mid-chunk does anyway, since Python runs its handler only when the chunk returns."""
  real = train_step_lib.make_train_step
  calls = []

  def make(*args, **kwargs):
    step = real(*args, **kwargs)

    def wrapped(iterator, num_steps, stop=lambda: False):
      calls.append(num_steps)
      if len(calls) != call:
        return step(iterator, num_steps, stop)
      sent = threading.Event()

      def send():
        os.kill(os.getpid(), signum)
        sent.set()

      threading.Timer(delay_s, send).start()

      def stop_once_sent():
        sent.wait(60)
        return stop()  # The handler has run on entering this call, in the main thread.
      return step(iterator, num_steps, stop_once_sent)
    return wrapped

  monkeypatch.setattr(train_step_lib, "make_train_step", make)
  return calls


@pytest.mark.slow
def test_sigterm_mid_chunk_saves_that_chunk_and_stops(tmp_path, idx_dir, one_device, monkeypatch):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=100, steps_per_loop=40,
                       checkpoint_every=1000, summary_every=1000)
  _signal_during_call(monkeypatch, call=2)
  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(errors.Preempted) as raised:
    train.run(cfg, one_device)
  assert raised.value.step == 80  # The chunk of steps 41-80 was running: it is finished, then saved.
  assert raised.value.exit_code == errors.EXIT_PREEMPTED == 75
  assert "SIGTERM received: saved a checkpoint at step 80" in str(raised.value)
  assert signal.getsignal(signal.SIGTERM) is previous  # The handler is only installed while training.
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  assert tf.train.latest_checkpoint(ckpt).endswith("ckpt-80")
  assert sorted(_scalars(cfg.workdir, "d_loss")) == [80]  # The steps since the last summary (none) are logged.
  monkeypatch.undo()
  # The same command continues to --train_steps exactly (a last chunk of 20 steps).
  assert train.run(cfg, one_device)["step"] == 100
  assert int(tf.train.load_variable(os.path.join(ckpt, "ckpt-100"), "step/.ATTRIBUTES/VARIABLE_VALUE")) == 100


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_run_starts_stops_it_before_training_with_exit_75_and_writes_nothing(
    tmp_path, four_steps, idx_dir, one_device, monkeypatch, signum):
  """A scheduler's SIGTERM (or a first Ctrl-C) during the checks before training, here while the first batch is
  read: exit 75 like a preemption during training (so that launch/slurm.sbatch requeues the job; ended by the
  signal's default action, it would not), with nothing new to save and nothing written, resumed or fresh."""
  real = data.check_first_batch

  def check_first_batch(*args, **kwargs):
    signal.raise_signal(signum)  # Its handler runs now: Python code, in the main thread.
    return real(*args, **kwargs)

  monkeypatch.setattr(data, "check_first_batch", check_first_batch)
  previous = signal.getsignal(signum)
  resumed = helpers.copy_run(four_steps, tmp_path, train_steps=8)
  fresh = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, workdir=str(tmp_path / "fresh"), train_steps=8)
  name = signal.Signals(signum).name
  for cfg, step, kept in ((resumed, 4, "the checkpoint of step 4 is the latest"),
                          (fresh, 0, "the workdir holds no checkpoint yet")):
    before = helpers.snapshot(cfg.workdir)
    with pytest.raises(errors.Preempted) as raised:
      train.run(cfg, one_device)
    assert raised.value.exit_code == errors.EXIT_PREEMPTED and raised.value.step == step and not raised.value.saved
    assert str(raised.value).startswith(f"{name} received while the run started: stopped before training, nothing "
                                        f"new to save ({kept}); rerun the same command to "), str(raised.value)
    assert helpers.snapshot(cfg.workdir) == before  # Not even flags.txt, nor a workdir for the fresh run.
    assert signal.getsignal(signum) is previous  # Restored, as after training.
  assert not os.path.exists(fresh.workdir)


@pytest.mark.slow
def test_divergence_stops_without_saving_and_keeps_the_last_good_checkpoint(tmp_path, four_steps, one_device):
  cfg = helpers.copy_run(four_steps, tmp_path)
  # Resumed with absurd learning rates (allowed on resume): the weights blow up to inf/NaN within a chunk.
  blown = dataclasses.replace(cfg, train_steps=20, g_lr=1e38, d_lr=1e38)
  with pytest.raises(errors.DivergedError) as raised:
    train.run(blown, one_device)
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


def test_profile_steps_end_chunks_at_the_trace_edges_and_write_a_trace(tmp_path, idx_dir, one_device, monkeypatch,
                                                                         caplog):
  """--profile_steps=2,3 with chunks of up to 4 steps: the trace starts after step 1 and stops after step 3, so the
  chunks are 1, 2 and 1 steps (a trace of other steps, or of whole chunks, would not be what was asked)."""
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=4, steps_per_loop=4, summary_every=1000,
                       sample_every=1000, checkpoint_every=1000, profile_steps="2,3")
  chunks = _record_chunks(monkeypatch)
  with caplog.at_level(logging.INFO, logger="absl"):
    assert train.run(cfg, one_device)["step"] == 4
  assert [r.steps for r in chunks] == [1, 2, 1]
  assert "Wrote a profile of steps 2-3 to " in caplog.text
  assert glob.glob(os.path.join(cfg.workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))


@pytest.mark.slow
def test_a_run_resumed_inside_profile_steps_traces_the_rest_of_them(tmp_path, four_steps, one_device, caplog):
  """Resumed at step 4 with --profile_steps=3,5: the trace covers step 5 (the earlier run never started one, and
  stopping a trace never started was a traceback after the workdir was written); a range past --train_steps ends
  with the run."""
  cfg = helpers.copy_run(four_steps, tmp_path, train_steps=6, profile_steps="3,5")
  with caplog.at_level(logging.INFO, logger="absl"):
    assert train.run(cfg, one_device)["step"] == 6
    assert "Wrote a profile of steps 5-5 to " in caplog.text
    assert train.run(dataclasses.replace(cfg, train_steps=8, profile_steps="7,20"), one_device)["step"] == 8
  assert "Wrote a profile of steps 7-8 to " in caplog.text
  assert len(glob.glob(os.path.join(cfg.workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))) == 2


def test_summaries_are_window_means_and_log_the_time_split(tmp_path, idx_dir, one_device, monkeypatch):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=6, steps_per_loop=1, summary_every=3,
                       sample_every=3, checkpoint_every=3)
  per_step = _record_chunks(monkeypatch)
  metrics = train.run(cfg, one_device)
  assert metrics["step"] == 6
  # The time split of the last window.
  for name in ("time/train", "time/checkpoints", "time/samples", "time/eval", "time/summaries"):
    assert 0.0 <= metrics[name] <= 1.0, name
  # Step 6's samples and checkpoint, and the summary written at step 3, count in the window that step 6 logs.
  for name in ("train", "checkpoints", "samples", "summaries"):
    assert metrics[f"time/{name}"] > 0, name
  activities = train._Window.ACTIVITIES  # pylint: disable=protected-access
  assert abs(sum(metrics[f"time/{n}"] for n in activities) - 1.0) < 1e-6
  # What the trainer wrote to TensorBoard at steps 3 and 6 is the mean of the train step's own per-step values of
  # steps 1-3 and 4-6 (each call ran one step), not the last step's value nor a mean over the whole run.
  assert [r.steps for r in per_step] == [1] * 6
  logged = _scalars(cfg.workdir, "d_loss")
  for window in ((1, 2, 3), (4, 5, 6)):
    values = [per_step[s - 1].sums["d_loss"] for s in window]
    assert np.std(values) > 1e-3  # The steps differ, so a wrong window would be seen.
    assert logged[window[-1]] == pytest.approx(np.mean(values), rel=1e-6, abs=1e-7), window
    assert logged[window[-1]] != pytest.approx(values[-1], rel=1e-4)
  assert metrics["d_loss"] == pytest.approx(logged[6], rel=1e-6)


def _record_chunks(monkeypatch):
  """Makes the trainer's train step record every ChunkResult it returns (in call order)."""
  real = train_step_lib.make_train_step
  results = []

  def make(*args, **kwargs):
    step = real(*args, **kwargs)

    def wrapped(iterator, num_steps, stop=lambda: False):
      results.append(step(iterator, num_steps, stop))
      return results[-1]
    return wrapped

  monkeypatch.setattr(train_step_lib, "make_train_step", make)
  return results


def _scalars(workdir, tag):
  """{step: value} of the TensorBoard scalar `tag` the run wrote."""
  found = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          found[event.step] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
  return found


def test_a_fresh_start_removes_the_event_files_and_grids_of_a_run_that_saved_no_checkpoint(tmp_path, idx_dir,
                                                                                          one_device, caplog):
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=1, sample_every=1)
  # A run killed before its first checkpoint left its flags, events (HParams, points) and a grid behind.
  train.write_flags(cfg.replace(g_lr=0.5), is_chief=True)
  old = summaries.Writer(workdir_lib.tensorboard_dir(cfg.workdir), enabled=True)
  old.hparams({"g_lr": 0.5}, ["d_loss"], trial_id="workdir")
  old.scalars(1, {"d_loss": 99.0})
  old.close()
  summaries.write_png(workdir_lib.sample_grid_path(cfg.workdir, 7), np.zeros((4, 4, 1), np.uint8))
  old_files = glob.glob(os.path.join(cfg.workdir, "tensorboard", "events.*"))
  assert len(old_files) == 1
  train.run(cfg, one_device)
  assert "Removed 1 TensorBoard event file(s) and 1 sample grid(s)" in caplog.text
  assert not any(os.path.exists(path) for path in old_files)
  assert sorted(os.listdir(workdir_lib.samples_dir(cfg.workdir))) == ["step_00000001.png"]
  values, _, _ = figures.read_hparams(workdir_lib.tensorboard_dir(cfg.workdir))
  assert values["g_lr"] == pytest.approx(cfg.g_lr)  # This run's row, not the discarded run's.
  assert _scalars(cfg.workdir, "d_loss")[1] != 99.0


@pytest.mark.slow
def test_native_image_size_spelled_out_or_left_at_0_is_the_same_run(tmp_path, four_steps, one_device):
  cfg = helpers.copy_run(four_steps, tmp_path)
  assert (cfg.image_size, cfg.channels) == (0, 0)  # Left at 0 when it was trained...
  saved = workdir_lib.read_config(os.path.join(cfg.workdir, "flags.txt"))
  assert (saved.image_size, saved.channels) == (28, 1)  # The resolved shape, not 0.
  # Spelled out, the native shape is what the workdir holds (the check a resume runs before restoring), and it
  # builds the same variables; another size is refused by the same check.
  spelled = dataclasses.replace(cfg, train_steps=5, image_size=28, channels=1)
  spelled = preflight.resolve_config(spelled, data.open_source(spelled))  # As train.run does first.
  preflight.check_workdir(spelled)
  with pytest.raises(errors.UserError, match=r"--image_size \(workdir has 28, this run 32\)"):
    preflight.check_workdir(dataclasses.replace(spelled, image_size=32))
  native, spelled_gan = models.build(cfg, 0), models.build(spelled, 0)
  assert tuple(native.image_shape) == tuple(spelled_gan.image_shape) == (28, 28, 1)
  for network in ("generator", "discriminator"):
    assert [w.shape for w in getattr(native, network).weights] == \
        [w.shape for w in getattr(spelled_gan, network).weights], network
  # Left at 0 on a workdir whose flags.txt says 28: the real resume restores and continues.
  assert train.run(dataclasses.replace(cfg, train_steps=5), one_device)["step"] == 5


def test_write_flags_replaces_flags_txt_until_the_first_checkpoint_then_records_the_latest(tmp_path):
  cfg = helpers.config(tmp_path, arch="mlp")
  flags_txt, latest = workdir_lib.flags_path(cfg.workdir), f"{cfg.workdir}/{workdir_lib.LATEST_FLAGS_FILE}"
  train.write_flags(cfg, is_chief=False)
  assert not os.path.exists(cfg.workdir)  # Only the chief writes.
  train.write_flags(cfg, is_chief=True)
  workdir_lib.write_config(cfg, latest)  # Left by an earlier resume of a run whose checkpoints are gone.
  other = cfg.replace(arch="dcgan")  # No checkpoint yet: a fresh start, whatever the model (--train_steps=0 first).
  train.write_flags(other, is_chief=True)
  assert workdir_lib.read_config(flags_txt) == other and not os.path.exists(latest)
  os.makedirs(workdir_lib.checkpoint_dir(cfg.workdir))
  open(os.path.join(workdir_lib.checkpoint_dir(cfg.workdir), "ckpt-2.index"), "w").close()
  train.write_flags(other.replace(train_steps=9), is_chief=True)  # A resume: flags.txt stays the first run's.
  assert workdir_lib.read_config(flags_txt) == other
  assert workdir_lib.read_run_config(cfg.workdir) == other.replace(train_steps=9)


def test_a_run_records_the_names_of_its_classes_for_the_tools_and_the_demo(tmp_path, four_steps, one_device):
  """Class folders name the labels: the run writes them to classes.json and the facts of its exports and demo say
  which label is which class; an unconditional model trained on one class (--class_filter) names that class. IDX
  data names none: no classes.json, and then a conditional run's facts hold "" for each class."""
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=12, classes=("bird", "cat", "dog"), bad=())
  cfg = helpers.config(tmp_path, arch="cgan_mlp", dataset="folder", data_dir=folder["root"], train_steps=1)
  train.run(cfg, one_device)
  assert workdir_lib.read_class_names(cfg.workdir, 3) == ["bird", "cat", "dog"]
  assert inference.facts(inference.load(cfg.workdir))["class_names"] == ["bird", "cat", "dog"]
  one_class = helpers.config(tmp_path / "one", arch="mlp", dataset="folder", data_dir=folder["root"], class_filter=1,
                             batch_size=4, train_steps=1)
  train.run(one_class, one_device)
  assert inference.facts(inference.load(one_class.workdir))["class_names"] == ["bird", "cat", "dog"]
  assert not os.path.exists(os.path.join(four_steps.workdir, "classes.json"))
  assert "class_names" not in inference.facts(inference.load(four_steps.workdir))  # Unconditional, all classes.
  os.remove(os.path.join(cfg.workdir, "classes.json"))  # As a conditional run on IDX data (or an older run) has it.
  assert inference.facts(inference.load(cfg.workdir))["class_names"] == ["", "", ""]
