"""Multi-worker training: launch/local.sh with 2 workers, evaluation, topology-free resume, a SIGTERM to one worker,
input sharding, clusters. Failed peers: tests/test_peer_failure.py.

The multi-process tests (marked slow) run the real entry point through launch/local.sh (2 MultiWorkerMirroredStrategy
workers on localhost), each under a hard watchdog (tests/subprocs.py: a timeout on every wait, then SIGKILL to every
process group), on the CPU with one thread per worker. They train the MLP GAN: its steps are quick and every one of
its parameters gets a real gradient (see the topology test). The in-process tests need no cluster.
"""

import logging as py_logging
import os
import re
import signal

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import errors
from gan_dist import figures
from gan_dist import main as main_lib
from gan_dist import state as state_lib
from gan_dist import workdir as workdir_lib
from tests import helpers
from tests import subprocs

STOPPED = re.compile(r"\[worker (\d)\] error: (.+) received: saved a checkpoint at step (\d+) on every worker")


def _local(tmp_path, flags, log="local.out"):
  """launch/local.sh with 2 workers and `flags`, to its end; returns (exit status, output)."""
  return subprocs.run(subprocs.local_sh_cmd(2, *flags), tmp_path / log, subprocs.env(tmp_path))


_fingerprints = helpers.worker_fingerprints


def _saved_counters(path):
  reader = tf.train.load_checkpoint(path)
  names = reader.get_variable_to_shape_map()
  step = reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
  iterations = {k.split("/")[0]: int(reader.get_tensor(k)) for k in names if k.endswith("_iterations/.ATTRIBUTES/"
                                                                                          "VARIABLE_VALUE")}
  return int(step), iterations


def _values(prefix):
  """{name: value} of every tensor a checkpoint holds (the save counter, which counts saves, left out)."""
  reader = tf.train.load_checkpoint(str(prefix))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if "save_counter" not in n and not n.startswith("_CHECKPOINTABLE")}


# How close two topologies' tensors must be, as a fraction of what training changed in each (see the test): float32
# round-off moves them by up to ~5e-5 of it, one step fewer by at least ~9%; 3e-3 sits 30-70x from both.
TOPOLOGY_TOLERANCE = 3e-3


def _relative_deviations(a, b, init):
  """{name: ||a - b|| / ||b - init||} over the tensors of two checkpoints' values, relative to what training changed
  in each tensor since `init` (inf where training changed nothing but a and b differ; 0 where all three agree)."""
  found = {}
  for name in b:
    x, y, y0 = (np.asarray(v[name], np.float64).ravel() for v in (a, b, init))
    diff, scale = np.linalg.norm(x - y), np.linalg.norm(y - y0)
    found[name] = diff / scale if scale else (0.0 if diff == 0 else np.inf)
  return found


@pytest.mark.slow
def test_two_workers_then_one_process_equals_one_process_throughout_then_one_workers_sigterm_stops_both(
    tmp_path, mirrored2, one_device, op_determinism, monkeypatch, caplog):
  """One run, image-folder data (mixed files, a bad one, shuffled, flipped), on changing topologies:

  0. 2 workers start it, and worker 1 alone gets SIGTERM while they start (after restoring, while the evaluator
     trains its feature network): both stop before training and exit 75, having written nothing.
  1. 2 workers (launch/local.sh) train to step 4, evaluating every 2 steps: both evaluate at the same steps with the
     same figures, the chief alone writes the best checkpoint, samples, events; both end bitwise equal.
  2. One process on one device resumes to step 6, and equals one device that trained the 6 steps straight: the same
     examples, flips and noise reach the same positions of the global batch whatever the topology (and evaluating
     changed nothing). Both run in this test's process (op determinism on, as --deterministic does), one after the
     other: the claim is about the topology, not about a process start.
  3. 2 workers resume that, until worker 1 alone gets SIGTERM: both save the same step and exit 75; the checkpoint
     of that step is complete (it restores into this process, its counters at that step).

  (Resuming after such a stop is resuming from a checkpoint, as in 2. and 3.; after a SIGINT, through the command:
  tests/test_preemption.py; a cluster relaunched after a failed peer: tests/test_peer_failure.py. One process with 2
  replicas against one device, step by step: tests/test_train_step.py.)

  The comparison of step 2. The 2 workers sum each gradient over 2 replicas of 4 images, one device over 8 images in
  one kernel: the same sums up to float32 round-off, in another order. So the test compares every tensor (weights,
  Adam's slots, BatchNorm statistics, counters) as ||resumed - straight|| <= 3e-3 ||straight - initial||, relative to
  what training changed in it. Float32 round-off (one device summing 8 images where 2 workers sum 2 x 4: 3.9e-5 on
  this AVX2 machine; oneDNN switched off on one side) moved the tensors by at most 4.3e-5 of that, Adam's second
  moments included: their near-zero entries differ hugely elementwise, not in norm. A data-order, flip, noise or
  resume bug changes the gradients of at least one step, as much as a missing step does, and one step fewer changes
  every tensor by at least 9% of that: the test checks that (> 10x the tolerance) on the straight run's step-5
  checkpoint, so the tolerance is shown to catch a missing step.
  """
  del op_determinism  # --deterministic turns it on in this process (stage 2).
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=60)
  workdir, straight = tmp_path / "workdir", tmp_path / "straight"
  # A flagfile that says --strategy=one_device: the launcher's own flags must still win.
  flags = ["--flagfile=configs/dcgan_cpu_quick.cfg", "--dataset=folder", f"--data_dir={folder['root']}",
           "--arch=mlp", "--channels=1", "--latent_dim=16", "--batch_size=8", "--random_flip", "--seed=3",
           "--deterministic", "--steps_per_loop=2", "--summary_every=2", "--checkpoint_every=2",
           "--sample_every=1000", "--num_samples=4"]
  ckpt = lambda step, where=workdir: str(where / "checkpoints" / f"ckpt-{step}")

  # 0. Stage 1's command, stopped while it starts. Worker 1 logs that it found no checkpoint ~3 s before the workers
  # vote on stopping: its evaluator trains the feature network meanwhile (on first use, on the folder's images,
  # grayscale and labelled: the quick supervised one), and caches it.
  cache = tmp_path / "cache"
  stage1 = flags + [f"--workdir={workdir}", "--train_steps=4", "--eval_every=2", "--eval_num=40",
                    f"--eval_cache_dir={cache}"]
  with subprocs.Proc(subprocs.local_sh_cmd(2, *stage1), tmp_path / "stage0.out", subprocs.env(tmp_path)) as proc:
    proc.wait_for_text("No checkpoint in", path=workdir / "logs" / "worker_1.log")
    os.kill(subprocs.worker_pids(proc.output())[1], signal.SIGTERM)
    assert proc.wait() == 75, subprocs.tail(proc.output())
    out = proc.output()
  assert ("[worker 1] error: SIGTERM received while the run started: stopped before training, nothing new to save "
          "(the workdir holds no checkpoint yet)") in out, subprocs.tail(out)
  assert "[worker 0] error: another worker's stop signal received while the run started" in out
  assert "local.sh: all 2 worker(s) stopped after a stop signal, with a checkpoint saved or before training" in out
  assert os.listdir(workdir) == ["logs"]  # Only local.sh's logs: no flags.txt, checkpoint, event file or sample.

  # 1. Two workers from scratch: one 2-worker MultiWorkerMirroredStrategy job (not two one_device chiefs), whose
  # steps run inside tf.function (nothing of the strategy runs eagerly). A tiny evaluation: 40 samples, with the
  # feature network of stage 0.
  rc, out = _local(tmp_path, stage1, "stage1.out")
  assert rc == 0, subprocs.tail(out)
  assert "local.sh: all 2 worker(s) succeeded" in out
  assert out.count("Strategy CollectiveAllReduceStrategy with 2 replica(s)") == 2
  assert all(f"[worker {i}] " in out for i in range(2))
  assert "OneDeviceStrategy" not in out
  assert "eagerly has significant overhead" not in out
  # The workers' votes and gathered figures (strategy.gather_rows): one traced function, not one per call.
  assert "triggered tf.function retracing" not in out
  assert _saved_counters(ckpt(4)) == (4, {"g_optimizer": 4, "d_optimizer": 4})
  # Both workers ended with bitwise identical weights, optimizer state and step: the chief's checkpoint and the
  # one the other worker wrote to its temporary directory have the same fingerprint.
  fingerprints = _fingerprints(workdir, 4)
  assert fingerprints == {0: checkpoint_lib.fingerprint(ckpt(4)), 1: checkpoint_lib.fingerprint(ckpt(4))}, out
  # Both evaluated at the same steps with bitwise the same figures (else their collectives, and their decisions to
  # save a best checkpoint, would not have matched), with the feature network stage 0 cached.
  logs = [(workdir / "logs" / f"worker_{i}.log").read_text() for i in range(2)]
  evaluations = [re.findall(r"Evaluation at step (\d+): (.*)", log) for log in logs]
  assert [s for s, _ in evaluations[0]] == ["2", "4"] and evaluations[0] == evaluations[1], evaluations
  assert [f for _, _, files in os.walk(cache) for f in files]
  assert len(re.findall(r"\[worker \d\] .*Feature network \S+ loaded from ", out)) == 2, subprocs.tail(out)
  # Only the chief wrote TensorBoard events (its pid is in the file name), samples, flags.txt and the best
  # checkpoint (checkpoints/best/ and best.json: the step of the lowest FCD)...
  events = os.listdir(workdir / "tensorboard")
  assert len(events) == 1 and f".{subprocs.worker_pids(out)[0]}." in events[0], events
  assert os.listdir(workdir / "samples") == ["step_00000004.png"]
  assert (workdir / "flags.txt").exists()
  best = checkpoint_lib.read_best(str(workdir))
  fcd = dict(figures.read_scalars(str(workdir / "tensorboard"))["eval/fcd"])
  assert sorted(fcd) == [2, 4] and best["metric"] == "fcd", (best, fcd)
  # (TensorBoard keeps float32.)
  assert best["value"] == pytest.approx(min(fcd.values()), rel=1e-6) and fcd[best["step"]] == min(fcd.values())
  assert os.path.dirname(best["checkpoint"]) == workdir_lib.best_dir(str(workdir))
  assert tf.io.gfile.exists(best["checkpoint"] + ".index")
  assert "New best fcd" in logs[0] and "New best fcd" not in logs[1]
  # ...and the other worker removed its temporary copies of every save.
  assert not os.listdir(tmp_path / "tmp")

  # The initial state (a function of --seed; Adam's slots start at zero), as a checkpoint, and the 2-worker
  # checkpoint restored into 2 replicas of this process: written back, it gives the same tensors.
  cfg = workdir_lib.read_config(str(workdir / "flags.txt"))
  checkpoint = checkpoint_lib.make_checkpoint(state_lib.create_state(cfg, mirrored2, cfg.num_classes))
  init = _values(checkpoint.write(str(tmp_path / "initial")))
  checkpoint.restore(ckpt(4)).assert_existing_objects_matched()
  assert checkpoint_lib.fingerprint(checkpoint.write(str(tmp_path / "rewritten"))) == fingerprints[0]

  # 2. This process, on one device, resumes the 2-worker run; then it trains the 6 steps straight from scratch. Each
  # run gets the command line a process would (config.from_args reads the flagfiles from the repository root).
  monkeypatch.chdir(subprocs.REPO)
  one_process = flags + ["--strategy=one_device", "--train_steps=6"]
  with caplog.at_level(py_logging.INFO, logger="absl"):
    rc = main_lib.run_cli(config_lib.from_args(one_process + [f"--workdir={workdir}"]),
                          make_strategy=lambda _: one_device)
  assert rc == errors.EXIT_OK and f"Resumed from {ckpt(4)} at step 4" in caplog.text, caplog.text[-3000:]
  assert main_lib.run_cli(config_lib.from_args(one_process + [f"--workdir={straight}", "--checkpoint_every=1"]),
                          make_strategy=lambda _: one_device) == errors.EXIT_OK
  assert _saved_counters(ckpt(6)) == (6, {"g_optimizer": 6, "d_optimizer": 6})
  resumed, uninterrupted, one_step_fewer = _values(ckpt(6)), _values(ckpt(6, straight)), _values(ckpt(5, straight))
  assert resumed.keys() == uninterrupted.keys() == init.keys() == one_step_fewer.keys() and len(init) > 60
  deviations = _relative_deviations(resumed, uninterrupted, init)
  assert max(deviations.values()) <= TOPOLOGY_TOLERANCE, {k: v for k, v in deviations.items() if v > 1e-5}
  # The tolerance is strict enough: one step fewer is far outside it in every tensor that training changes (all
  # but the learning rates, which must then be equal).
  control = _relative_deviations(one_step_fewer, uninterrupted, init)
  unchanged = sorted(n for n in init if np.array_equal(uninterrupted[n], init[n]))
  assert all(n.endswith("_learning_rate/.ATTRIBUTES/VARIABLE_VALUE") for n in unchanged) and len(unchanged) == 2
  assert min(v for n, v in control.items() if n not in unchanged) > 10 * TOPOLOGY_TOLERANCE, control

  # 3. Two workers resume the single-process run, until worker 1 alone gets SIGTERM (a node's preemption notice):
  # worker 0 learns of it in the all-reduce that ends the chunk of steps in which worker 1 saw it, both save a
  # checkpoint of the same step and exit 75, and so does local.sh (which got no signal).
  flags.append(f"--workdir={workdir}")
  with subprocs.Proc(subprocs.local_sh_cmd(2, *flags, "--train_steps=100000"), tmp_path / "stage3.out",
                     subprocs.env(tmp_path)) as proc:
    proc.wait_for_text("step 8/100000", path=workdir / "logs" / "worker_1.log")  # It trained a chunk.
    os.kill(subprocs.worker_pids(proc.output())[1], signal.SIGTERM)
    assert proc.wait() == 75, subprocs.tail(proc.output())
    out = proc.output()
  assert out.count(f"Resumed from {ckpt(6)} at step 6") == 2, subprocs.tail(out)
  stopped = {int(w): (why, int(step)) for w, why, step in STOPPED.findall(out)}
  assert stopped.keys() == {0, 1}, subprocs.tail(out)
  assert stopped[1][0] == "SIGTERM" and stopped[0][0] == "another worker's stop signal", stopped
  reached = stopped[0][1]
  assert stopped[1][1] == reached >= 8, stopped  # The same step on both workers.
  assert all(f"local.sh: worker {i} stopped after saving a checkpoint, or before training (exit 75)" in out
             for i in range(2))
  assert "local.sh: all 2 worker(s) stopped after a stop signal, with a checkpoint saved or before training" in out
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints")) == ckpt(reached)
  assert _fingerprints(workdir, reached) == {0: checkpoint_lib.fingerprint(ckpt(reached)),
                                             1: checkpoint_lib.fingerprint(ckpt(reached))}
  assert not os.listdir(tmp_path / "tmp")

  # The stop's checkpoint is complete: every object of the state restores from it, at that step.
  assert _saved_counters(ckpt(reached)) == (reached, {"g_optimizer": reached, "d_optimizer": reached})
  checkpoint.restore(ckpt(reached)).assert_existing_objects_matched()


# ------------------------------------------------------------------------------------------------ in-process tests


def _first_pixels(dataset, num_batches):
  """Example indices (first pixel of each image, see helpers.make_idx_dir) of the first `num_batches` elements."""
  out = []
  for batch in dataset.take(num_batches):
    pixels = np.round((batch["images"].numpy()[:, 0, 0, 0] + 1.0) * 127.5).astype(int)
    out.append(pixels.tolist())
  return out


@pytest.mark.parametrize("start_step", [0, 5])
def test_workers_get_disjoint_slices_of_each_global_batch(tmp_path, start_step):
  """The dataset of each of 2 workers (1 replica each) holds its half of the one-process global batch."""
  source = data.load_idx(helpers.make_idx_dir(str(tmp_path / "data"), num=64), "train", crop="center")
  cfg = helpers.config(tmp_path, batch_size=16, seed=3)
  fn = data.make_dataset_fn(cfg, source, (28, 28, 1), start_step=start_step)
  steps = 6  # More than one epoch (4 steps), so reshuffled epochs are covered too.
  # One process, 1 replica: element s is the whole global batch of step start_step + s.
  whole = _first_pixels(fn(tf.distribute.InputContext(1, 0, 1)), steps)
  # Two workers with one replica each: element s is that worker's share of the same global batch.
  halves = [_first_pixels(fn(tf.distribute.InputContext(2, i, 2)), steps) for i in range(2)]
  for s in range(steps):
    w0, w1 = halves[0][s], halves[1][s]
    assert len(w0) == len(w1) == 8
    assert not set(w0) & set(w1), f"step {start_step + s}: both workers got examples {set(w0) & set(w1)}"
    assert w0 + w1 == whole[s]
