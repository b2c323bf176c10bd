"""Checkpoint save and resume: an interrupted run continues exactly as an uninterrupted one."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import errors
from gan_dist import figures
from gan_dist import files
from gan_dist import state as state_lib
from gan_dist import train
from gan_dist import workdir as workdir_lib
from tests import helpers


@pytest.fixture
def idx_dir(tmp_path):
  return helpers.make_idx_dir(str(tmp_path / "idx"), num=64)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, one_device):
  """A workdir with ckpt-2 and ckpt-4 (mlp, one replica: checkpoints do not depend on it), copied by each test that
  resumes or damages it."""
  root = tmp_path_factory.mktemp("two_checkpoints")
  return helpers.trained_mlp(root, one_device)


@pytest.mark.slow
def test_resume_is_exact_and_tensorboard_shows_each_step_once(tmp_path, idx_dir, one_device):
  base = helpers.config(tmp_path, data_dir=idx_dir, train_steps=4, steps_per_loop=2, checkpoint_every=2,
                        ema_decay=0.9)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  train.run(straight, one_device)
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  helpers.interrupted_copy(straight.workdir, interrupted.workdir, 2)
  metrics = train.run(interrupted, one_device)
  assert metrics["step"] == 4
  a = helpers.checkpoint_values(os.path.join(straight.workdir, "checkpoints", "ckpt-4"))
  b = helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-4"))
  assert a.keys() == b.keys()
  # tf.train.Checkpoint stores each variable once, under its first path: D's weights appear under d_optimizer.
  names = " ".join(a)
  for part in ("generator", "ema_generator", "g_optimizer", "d_optimizer", "step", "seed_states"):
    assert part in names, part
  # Weights, EMA (with its re-estimated BatchNorm statistics), Adam slots and dropout seeds all continue exactly
  # (noise and data order are functions of seed and step).
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert int(tf.train.load_variable(os.path.join(straight.workdir, "checkpoints", "ckpt-4"),
                                    "step/.ATTRIBUTES/VARIABLE_VALUE")) == 4
  # The copy holds the straight run's events of steps 3 and 4, logged after ckpt-2 (as a run killed after logging
  # them leaves it); the resumed run logs them again. TensorBoard's own reader shows each step once, the resumed
  # run's (equal here: a window of one step, resumed exactly), and the HParams the run started with, once. (The
  # accumulator of TensorBoard's server: its legacy event_accumulator never purges tensor summaries.)
  accumulator = plugin_event_accumulator.EventAccumulator(os.path.join(interrupted.workdir, "tensorboard"),
                                                          size_guidance={plugin_event_accumulator.TENSORS: 0})
  accumulator.Reload()
  d_loss = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors("d_loss")]
  assert [step for step, _ in d_loss] == [1, 2, 3, 4]
  assert figures.read_scalars(os.path.join(interrupted.workdir, "tensorboard"))["d_loss"] == d_loss
  assert len(glob.glob(os.path.join(interrupted.workdir, "tensorboard", "events.*"))) == 2
  starts = [path for path in glob.glob(os.path.join(interrupted.workdir, "tensorboard", "events.*"))
            for record in tf.data.TFRecordDataset(path)
            if b"_hparams_/session_start_info" in record.numpy()]
  assert len(starts) == 1


def test_resume_stops_at_train_steps(two_checkpoints, tmp_path, one_device):
  cfg = helpers.copy_run(two_checkpoints, tmp_path)
  before = helpers.snapshot(os.path.join(cfg.workdir, "checkpoints"))
  assert train.run(cfg, one_device)["step"] == 4  # Nothing left to do...
  assert helpers.snapshot(os.path.join(cfg.workdir, "checkpoints")) == before  # ...so nothing trained or saved.


def test_incompatible_workdir_is_refused(two_checkpoints, tmp_path, one_device):
  cfg = helpers.copy_run(two_checkpoints, tmp_path)
  with pytest.raises(ValueError, match=r"--latent_dim \(workdir has 100, this run 64\)"):
    train.run(dataclasses.replace(cfg, latent_dim=64, train_steps=6), one_device)


@pytest.mark.slow
@pytest.mark.parametrize("damage,suffix", [(helpers.truncate_file, ".data-00000-of-00001"),
                                           (helpers.flip_byte, ".data-00000-of-00001"),
                                           (helpers.overwrite_with_garbage, ".index")],
                         ids=["truncated", "flipped_byte", "bad_index"])
def test_damaged_latest_checkpoint_names_the_newest_good_one(two_checkpoints, tmp_path, one_device, damage, suffix):
  cfg = helpers.copy_run(two_checkpoints, tmp_path, train_steps=6)
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  damage(os.path.join(ckpt, "ckpt-4" + suffix))
  before = helpers.snapshot(cfg.workdir)
  with pytest.raises(errors.CorruptCheckpointError) as raised:
    train.run(cfg, one_device)
  message = str(raised.value)
  assert "\n" not in message
  assert f"checkpoint {ckpt}/ckpt-4 is damaged" in message
  assert f"newest checkpoint that restores is {ckpt}/ckpt-2" in message and "--resume_step=2" in message
  assert helpers.snapshot(cfg.workdir) == before  # Stopped before writing anything.


@pytest.mark.slow
def test_the_resume_step_the_message_names_replaces_the_damaged_checkpoint(two_checkpoints, tmp_path, one_device):
  """The flag the message of the test above names resumes from ckpt-2, and the resumed run's saves replace the
  damaged ckpt-4. Shown once, for a truncated data file: how ckpt-4 was damaged decides what the check above finds,
  not what follows (the resume reads ckpt-2 only, and the save writes every file of ckpt-4 anew)."""
  cfg = helpers.copy_run(two_checkpoints, tmp_path, train_steps=6)
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  helpers.truncate_file(os.path.join(ckpt, "ckpt-4.data-00000-of-00001"))
  with pytest.raises(errors.CorruptCheckpointError, match="--resume_step=2"):
    train.run(cfg, one_device)
  metrics = train.run(dataclasses.replace(cfg, resume_step=2), one_device)
  assert metrics["step"] == 6
  assert tf.train.latest_checkpoint(ckpt).endswith("ckpt-6")
  assert checkpoint_lib.verify(os.path.join(ckpt, "ckpt-4")) is None
  assert train.run(cfg, one_device)["step"] == 6  # The plain command works again.


def test_no_restorable_checkpoint_says_so(two_checkpoints, tmp_path, one_device):
  cfg = helpers.copy_run(two_checkpoints, tmp_path, train_steps=6)
  for step in (2, 4):
    helpers.truncate_file(os.path.join(cfg.workdir, "checkpoints", f"ckpt-{step}.data-00000-of-00001"))
  with pytest.raises(errors.CorruptCheckpointError, match="no older checkpoint .* restores; start over"):
    train.run(cfg, one_device)


def test_resume_step_must_exist(two_checkpoints, tmp_path, one_device):
  cfg = helpers.copy_run(two_checkpoints, tmp_path, train_steps=6, resume_step=3)
  with pytest.raises(errors.UserError, match=r"--resume_step=3: no checkpoint of that step .*there are: 4, 2"):
    train.run(cfg, one_device)


def test_leftovers_of_a_killed_run_are_removed(two_checkpoints, tmp_path, one_device):
  """What a process killed while saving leaves (a _temp directory, a temporary index file, a half-deleted
  checkpoint, gan_dist's temporary files) is removed when the next run starts; the latest checkpoint is used."""
  cfg = helpers.copy_run(two_checkpoints, tmp_path, train_steps=6)
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  os.makedirs(os.path.join(ckpt, "ckpt-6_temp"))
  open(os.path.join(ckpt, "ckpt-6_temp", "part-00000-of-00001.index"), "wb").close()
  open(os.path.join(ckpt, "checkpoint.tmp0123abcd"), "w").close()
  open(os.path.join(ckpt, "ckpt-1.data-00000-of-00001"), "wb").close()  # Its index is gone: an interrupted delete.
  open(os.path.join(cfg.workdir, "flags.txt" + files.TMP_SUFFIX), "w").close()
  metrics = train.run(cfg, one_device)
  assert metrics["step"] == 6
  left = sorted(os.listdir(ckpt))
  assert left == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001",
                  "ckpt-4.index", "ckpt-6.data-00000-of-00001", "ckpt-6.index"], left
  assert not [n for n in os.listdir(cfg.workdir) if n.endswith(files.TMP_SUFFIX)]


def test_fingerprint_sees_every_value(tmp_path):
  v = tf.Variable([1.0, 2.0])
  ckpt = tf.train.Checkpoint(v=v)
  first = checkpoint_lib.fingerprint(ckpt.write(str(tmp_path / "a")))
  assert checkpoint_lib.fingerprint(ckpt.write(str(tmp_path / "b"))) == first
  v.assign([1.0, 2.0000002])
  assert checkpoint_lib.fingerprint(ckpt.write(str(tmp_path / "c"))) != first


def test_best_checkpoint_keeps_the_lowest_value_and_a_tool_asking_its_step_is_pointed_to_best(tmp_path, idx_dir,
                                                                                              one_device):
  # No training needed: the state's variables are what save_best writes (train.run calls it after an evaluation,
  # see tests/eval/test_evaluator.py).
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=2)
  state = state_lib.create_state(cfg, one_device, 10)
  checkpointer = checkpoint_lib.Checkpointer(cfg, state, one_device)
  assert checkpointer.save_best(2, "fcd", 5.0) is not None
  assert checkpointer.save_best(3, "fcd", 7.0) is None  # Worse: the best stays.
  assert checkpoint_lib.read_best(cfg.workdir)["step"] == 2
  assert checkpointer.save_best(4, "fcd", 1.5) is not None
  best = checkpoint_lib.read_best(cfg.workdir)
  assert (best["step"], best["value"]) == (4, 1.5) and tf.io.gfile.exists(best["checkpoint"] + ".index")
  assert len(glob.glob(os.path.join(workdir_lib.best_dir(cfg.workdir), "*.index"))) == 1
  # A tool asked for step 4, whose regular checkpoint is gone (--max_to_keep), is pointed to --best; step 2 is not.
  with pytest.raises(errors.UserError, match=r"no checkpoint at step 4 .*; there are: none; step 4 is the best "
                     r"checkpoint, kept in .*/best: pass --best$"):
    checkpoint_lib.inference_path(cfg.workdir, step=4)
  with pytest.raises(errors.UserError, match=r"no checkpoint at step 2 .*; there are: none$"):
    checkpoint_lib.inference_path(cfg.workdir, step=2)

def test_best_is_decided_from_what_every_worker_saw_not_from_the_file_the_chief_rewrites(tmp_path, idx_dir,
                                                                                        one_device):
  """The chief rewrites best.json while the other workers may not yet have decided whether to save: a worker that
  read the chief's newer file skipped a save the chief made, so its save counter (in every later checkpoint)
  differed from the chief's. The decision must come from the best of this run's own earlier calls."""
  cfg = helpers.config(tmp_path, arch="mlp", data_dir=idx_dir, train_steps=2)
  checkpointer = checkpoint_lib.Checkpointer(cfg, state_lib.create_state(cfg, one_device, 10), one_device)
  assert checkpointer.save_best(2, "fcd", 5.0) is not None
  # What a worker finds when the chief got ahead: best.json already names step 4's lower value.
  info = os.path.join(workdir_lib.best_dir(cfg.workdir), "best.json")
  files.write_atomic(info, '{"step": 4, "metric": "fcd", "value": 3.0, "checkpoint": "x"}')
  assert checkpointer.save_best(4, "fcd", 3.0) is not None
  assert checkpointer.best["step"] == 4 and int(checkpointer.checkpoint.save_counter) == 2
  # A new Checkpointer (a resumed run) starts from the file.
  assert checkpoint_lib.Checkpointer(cfg, checkpointer.state, one_device).best["value"] == 3.0


@pytest.mark.slow
def test_a_resume_step_keeps_the_checkpoint_it_resumed_from_listed_and_rotated(two_checkpoints, tmp_path, one_device):
  """Resumed from ckpt-2 (of 2 and 4), the index lists 2 and the run's saves, and --max_to_keep rotates ckpt-2 out
  like any other: without its timestamp CheckpointManager took it for one kept by --keep_checkpoint_every_n_hours,
  unlisted and never deleted."""
  cfg = helpers.copy_run(two_checkpoints, tmp_path, train_steps=6, resume_step=2, max_to_keep=3)
  ckpt = os.path.join(cfg.workdir, "checkpoints")
  train.run(cfg, one_device)
  listed = [os.path.basename(p) for p in tf.train.get_checkpoint_state(ckpt).all_model_checkpoint_paths]
  assert listed == ["ckpt-2", "ckpt-4", "ckpt-6"]
  train.run(dataclasses.replace(cfg, resume_step=-1, train_steps=8, max_to_keep=2), one_device)
  listed = [os.path.basename(p) for p in tf.train.get_checkpoint_state(ckpt).all_model_checkpoint_paths]
  assert listed == ["ckpt-6", "ckpt-8"]
  assert not any(name.startswith(("ckpt-2.", "ckpt-4.")) for name in os.listdir(ckpt))
