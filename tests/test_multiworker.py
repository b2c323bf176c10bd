"""Multi-worker training: launch/local.sh with 2 workers, topology-free resume, failures, input sharding, clusters.

The multi-process tests run the real entry point through launch/local.sh (2 MultiWorkerMirroredStrategy workers on
localhost), each under a hard watchdog: a timeout on every wait, then SIGKILL to local.sh's process group and to
every worker's own process group (local.sh starts each worker with setsid). The in-process tests need no cluster.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import data
from gan_dist import config as config_lib
from gan_dist import workdir as workdir_lib
from gan_dist import state as state_lib
from gan_dist import strategy as strategy_lib
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_SH = os.path.join(REPO, "launch", "local.sh")
# Small and quick, but every step kind happens: checkpoints every 2 steps, summaries, a sample grid at the end. The
# quick-start flagfile says --strategy=one_device: the launcher's own flags must still win.
TRAIN_FLAGS = ["--flagfile=configs/dcgan_cpu_quick.cfg", "--batch_size=16", "--steps_per_loop=2", "--summary_every=2",
               "--checkpoint_every=2", "--sample_every=1000", "--num_samples=4"]
STAGE_TIMEOUT_S = 180  # One process start + a few steps takes ~30 s on 2 CPU cores; 180 s means a hang.
WORKER_PID = re.compile(r"local\.sh: worker (\d+) pid (\d+)")
FINGERPRINT = re.compile(r"Checkpoint step (\d+) fingerprint ([0-9a-f]+) \(worker (\d+)\)")


def _kill_group(pid: int, sig=signal.SIGKILL) -> None:
  try:
    os.killpg(pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


def _kill_all(proc: subprocess.Popen, output: str) -> None:
  """Watchdog: kills local.sh's process group and the process group of every worker it reported."""
  _kill_group(proc.pid)
  for _, pid in WORKER_PID.findall(output):
    _kill_group(int(pid))


def _env(tmp_path):
  """The subprocess environment: no inherited cluster, and a private TMPDIR to check for leftover files."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["TMPDIR"] = str(tmp_path / "tmp")
  os.makedirs(env["TMPDIR"], exist_ok=True)
  return env


def _run(cmd, tmp_path, timeout=STAGE_TIMEOUT_S, **env):
  """Runs `cmd` from the repo root in its own session, with `env` added; returns (returncode, stdout+stderr)."""
  proc = subprocess.Popen(cmd, cwd=REPO, env=dict(_env(tmp_path), **env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    _kill_group(proc.pid, signal.SIGTERM)  # local.sh then stops its workers itself...
    try:
      out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
      out = ""
    _kill_all(proc, out)  # ...and whatever is left is killed.
    out = out or proc.communicate()[0]
    pytest.fail(f"{' '.join(cmd)} still running after {timeout} s; output tail:\n{out[-4000:]}")
  finally:
    if proc.poll() is None:
      _kill_group(proc.pid)
  return proc.returncode, out


def _local(num_workers, flags, tmp_path):
  return _run(["bash", LOCAL_SH, str(num_workers), *flags], tmp_path)


def _fingerprints(workdir, step):
  """{worker: fingerprint} logged at `step` in the worker logs that local.sh kept."""
  found = {}
  for name in sorted(os.listdir(os.path.join(workdir, "logs"))):
    with open(os.path.join(workdir, "logs", name)) as f:
      for m in FINGERPRINT.finditer(f.read()):
        if int(m.group(1)) == step:
          found[int(m.group(3))] = m.group(2)
  return found


def _saved_counters(path):
  reader = tf.train.load_checkpoint(path)
  names = reader.get_variable_to_shape_map()
  step = reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
  iterations = {k.split("/")[0]: int(reader.get_tensor(k)) for k in names if k.endswith("_iterations/.ATTRIBUTES/"
                                                                                          "VARIABLE_VALUE")}
  return int(step), iterations


def _tail(out, n=4000):
  return out[-n:]


def _wait_for_log(path, text, proc, timeout=STAGE_TIMEOUT_S):
  deadline = time.monotonic() + timeout
  while not (os.path.exists(path) and text in open(path).read()):
    assert proc.poll() is None, f"ended early; {path}:\n{_tail(open(path).read()) if os.path.exists(path) else ''}"
    assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
    time.sleep(0.3)


def test_two_workers_resume_on_mirrored_and_back(tmp_path, mirrored2):
  """2 workers train to 4; one process (mirrored, 2 replicas) resumes to 6; 2 workers resume that to 8."""
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = str(tmp_path / "workdir")
  flags = TRAIN_FLAGS + [f"--data_dir={data_dir}", f"--workdir={workdir}"]
  ckpt = lambda step: os.path.join(workdir, "checkpoints", f"ckpt-{step}")

  # 1. Two workers from scratch: one 2-worker MultiWorkerMirroredStrategy job (not two one_device chiefs), whose
  # steps run inside tf.function (nothing of the strategy runs eagerly).
  rc, out = _local(2, flags + ["--train_steps=4"], tmp_path)
  assert rc == 0, _tail(out)
  assert "local.sh: all 2 worker(s) succeeded" in out
  assert "[worker 0]" in out and "[worker 1]" in out
  for i in range(2):
    assert f"[worker {i}] " in out and out.count("Strategy CollectiveAllReduceStrategy with 2 replica(s)") == 2
  assert "OneDeviceStrategy" not in out
  assert "eagerly has significant overhead" not in out
  assert os.path.exists(ckpt(4) + ".index")
  assert _saved_counters(ckpt(4)) == (4, {"g_optimizer": 4, "d_optimizer": 4})
  # Both workers ended with bitwise identical weights, optimizer state and step: the chief's checkpoint and the
  # one the other worker wrote to its temporary directory have the same fingerprint.
  fingerprints = _fingerprints(workdir, 4)
  assert fingerprints == {0: checkpoint_lib.fingerprint(ckpt(4)), 1: checkpoint_lib.fingerprint(ckpt(4))}, out
  # Only the chief wrote TensorBoard events (its pid is in the file name), samples and flags.txt...
  chief_pid = dict(WORKER_PID.findall(out))["0"]
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert len(events) == 1 and f".{chief_pid}." in events[0], events
  assert os.listdir(os.path.join(workdir, "samples")) == ["step_00000004.png"]
  assert os.path.exists(os.path.join(workdir, "flags.txt"))
  # ...and the other worker removed its temporary checkpoints.
  assert not os.listdir(tmp_path / "tmp")

  # The 2-worker checkpoint restores exactly into 2 replicas of one process: writing it back gives the same tensors.
  cfg = workdir_lib.read_config(os.path.join(workdir, "flags.txt"))
  state = state_lib.create_state(cfg, mirrored2, cfg.num_classes)
  checkpoint = checkpoint_lib.make_checkpoint(state)
  checkpoint.restore(ckpt(4)).assert_existing_objects_matched()
  assert checkpoint_lib.fingerprint(checkpoint.write(str(tmp_path / "rewritten"))) == fingerprints[0]

  # 2. One process, MirroredStrategy over 2 logical CPUs, resumes the 2-worker run.
  rc, out = _run([sys.executable, "-m", "gan_dist.main", *flags, "--strategy=mirrored", "--num_cpu_replicas=2",
                  "--train_steps=6"], tmp_path)
  assert rc == 0, _tail(out)
  assert f"Resumed from {ckpt(4)} at step 4" in out
  assert "Done at step 6" in out
  assert _saved_counters(ckpt(6)) == (6, {"g_optimizer": 6, "d_optimizer": 6})

  # 3. Two workers resume the single-process run, until local.sh gets SIGTERM in the middle of a chunk: every worker
  # finishes it, they save a checkpoint of the same step together, and everything exits 75.
  proc = subprocess.Popen(["bash", LOCAL_SH, "2", *flags, "--train_steps=100000"], cwd=REPO, env=_env(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    _wait_for_log(os.path.join(workdir, "logs", "worker_1.log"), "step 10/100000", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=STAGE_TIMEOUT_S)
  finally:
    if proc.poll() is None:
      _kill_group(proc.pid)
  assert proc.returncode == 75, _tail(out)
  assert out.count(f"Resumed from {ckpt(6)} at step 6") == 2, _tail(out)
  saved = sorted({int(m) for m in re.findall(r"SIGTERM received: saved a checkpoint at step (\d+)", out)})
  assert len(saved) == 1 and saved[0] >= 10, _tail(out)  # The same step on both workers.
  reached = saved[0]
  assert "local.sh: all 2 worker(s) saved a checkpoint after TERM" in out
  assert _fingerprints(workdir, reached) == {0: checkpoint_lib.fingerprint(ckpt(reached)),
                                             1: checkpoint_lib.fingerprint(ckpt(reached))}
  assert not os.listdir(tmp_path / "tmp")

  # 4. The same command continues from there and ends exactly at --train_steps.
  rc, out = _local(2, flags + [f"--train_steps={reached + 2}"], tmp_path)
  assert rc == 0, _tail(out)
  assert out.count(f"Resumed from {ckpt(reached)} at step {reached}") == 2, _tail(out)
  assert out.count(f"Done at step {reached + 2}") == 2
  assert _saved_counters(ckpt(reached + 2))[0] == reached + 2


def test_folder_data_two_workers_then_one_process_equals_one_process_throughout(tmp_path, mirrored2):
  """Image-folder data (mixed files, a bad one, shuffled, flipped): 2 workers train 2 steps, one process with 2
  replicas resumes to 4, and the result equals one process training 4 steps: the same examples, flips and noise
  reach the same replica positions whatever the topology."""
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=60)
  flags = ["--dataset=folder", f"--data_dir={folder['root']}", "--arch=dcgan32", "--latent_dim=16", "--batch_size=8",
           "--steps_per_loop=2", "--checkpoint_every=2", "--summary_every=2", "--sample_every=1000", "--num_samples=4",
           "--random_flip", "--seed=3", "--deterministic"]
  mixed = str(tmp_path / "mixed")
  rc, out = _local(2, flags + [f"--workdir={mixed}", "--train_steps=2"], tmp_path)
  assert rc == 0, _tail(out)
  assert out.count("Strategy CollectiveAllReduceStrategy with 2 replica(s)") == 2, _tail(out)
  from gan_dist import train  # pylint: disable=g-import-not-at-top
  cfg = workdir_lib.read_config(os.path.join(mixed, "flags.txt"))
  import dataclasses  # pylint: disable=g-import-not-at-top
  assert train.run(dataclasses.replace(cfg, train_steps=4, strategy="mirrored", num_cpu_replicas=2),
                   mirrored2)["step"] == 4
  straight = dataclasses.replace(cfg, train_steps=4, strategy="mirrored", num_cpu_replicas=2,
                                 workdir=str(tmp_path / "straight"))
  assert train.run(straight, mirrored2)["step"] == 4
  a = tf.train.load_checkpoint(os.path.join(mixed, "checkpoints", "ckpt-4"))
  b = tf.train.load_checkpoint(os.path.join(straight.workdir, "checkpoints", "ckpt-4"))
  names = [n for n in a.get_variable_to_shape_map() if "save_counter" not in n and not n.startswith("_CHECKPOINTABLE")]
  assert sorted(names) == sorted(n for n in b.get_variable_to_shape_map()
                                 if "save_counter" not in n and not n.startswith("_CHECKPOINTABLE"))
  for name in names:
    np.testing.assert_allclose(a.get_tensor(name), b.get_tensor(name), rtol=1e-5, atol=1e-6, err_msg=name)


def test_killed_worker_stops_the_run(tmp_path):
  """Killing worker 1 mid-training makes local.sh stop worker 0 and exit non-zero, naming worker 1, within 60 s."""
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = tmp_path / "workdir"
  log = tmp_path / "local.out"
  cmd = ["bash", LOCAL_SH, "2", *TRAIN_FLAGS, f"--data_dir={data_dir}", f"--workdir={workdir}",
         "--train_steps=100000", "--checkpoint_every=100000"]
  with open(log, "w") as out_file:
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=out_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
  try:
    # Wait until worker 1 trains: it logs the first summary (step 2) only after collectives ran.
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    worker1_log = workdir / "logs" / "worker_1.log"
    while not (worker1_log.exists() and "step 2/100000" in worker1_log.read_text()):
      assert proc.poll() is None, f"local.sh ended early:\n{_tail(log.read_text())}"
      assert time.monotonic() < deadline, f"worker 1 never trained:\n{_tail(log.read_text())}"
      time.sleep(0.5)
    pids = {int(i): int(pid) for i, pid in WORKER_PID.findall(log.read_text())}

    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    rc = proc.wait(timeout=60)
    elapsed = time.monotonic() - killed_at
    out = log.read_text()
    assert rc != 0
    assert elapsed < 60
    assert re.search(r"local\.sh: FAILED: worker 1 exited with status \d+", out), _tail(out)
    # Worker 0 was stopped, not left waiting in a collective.
    for _ in range(20):
      try:
        os.kill(pids[0], 0)
      except ProcessLookupError:
        break
      time.sleep(0.1)
    else:
      pytest.fail(f"worker 0 (pid {pids[0]}) still runs after local.sh exited")
  finally:
    if proc.poll() is None:
      _kill_group(proc.pid, signal.SIGTERM)
      try:
        proc.wait(timeout=20)
      except subprocess.TimeoutExpired:
        pass
    _kill_all(proc, log.read_text())


def test_local_sh_usage(tmp_path):
  rc, out = _run(["bash", LOCAL_SH], tmp_path, timeout=30)
  assert rc == 2 and "usage:" in out
  rc, out = _run(["bash", LOCAL_SH, "two", "--train_steps=1"], tmp_path, timeout=30)
  assert rc == 2 and "usage:" in out


def _fake_python(tmp_path, body):
  """An interpreter for local.sh's PYTHON: runs local.sh's port-picking script, otherwise `body` (a worker)."""
  path = tmp_path / "fake_python"
  path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n"
                  "if sys.argv[1] == '-':\n  sys.argv.pop(0)\n  exec(sys.stdin.read())\n  sys.exit()\n"
                  "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n" + body)
  path.chmod(0o755)
  return str(path)


def _fake_gpus(tmp_path, count):
  """A PATH with an nvidia-smi that lists `count` GPUs."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  smi = bin_dir / "nvidia-smi"
  smi.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(count)))
  smi.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


def test_local_sh_environment_of_each_worker(tmp_path):
  """Without TensorFlow: what each worker is started with, where its output goes, and GPUS_PER_WORKER."""
  python = _fake_python(tmp_path, "print('argv', json.dumps(sys.argv[1:]))\n"
                                  "print('tf_config', os.environ['TF_CONFIG'])\n"
                                  "print('cuda', os.environ.get('CUDA_VISIBLE_DEVICES'))\n")
  workdir = tmp_path / "workdir"
  rc, out = _run(["bash", LOCAL_SH, "3", "--flagfile=x.cfg", "--workdir", str(workdir)], tmp_path, timeout=60,
                 PYTHON=python, GPUS_PER_WORKER="2", PATH=_fake_gpus(tmp_path, 6))
  assert rc == 0, out
  configs = []
  for i in range(3):
    lines = (workdir / "logs" / f"worker_{i}.log").read_text().splitlines()
    # The launcher's own flags come last, where a flagfile or argument cannot override them.
    assert f"[worker {i}] argv " + json.dumps(["-m", "gan_dist.main", "--flagfile=x.cfg", "--workdir", str(workdir),
                                               "--strategy=multi_worker_mirrored", "--cluster=tf_config"]) in out
    tf_config = json.loads(next(l for l in lines if l.startswith("tf_config ")).split(" ", 1)[1])
    assert tf_config["task"] == {"type": "worker", "index": i}
    configs.append(tf_config["cluster"])
    assert f"cuda {2 * i},{2 * i + 1}" in lines
  workers = configs[0]["worker"]
  assert configs == [configs[0]] * 3 and len(set(workers)) == 3
  assert all(w.startswith("localhost:") for w in workers)


def test_local_sh_failing_worker_stops_the_others(tmp_path):
  """Without TensorFlow: worker 1 exits with status 3 while worker 0 would run for 10 minutes."""
  python = _fake_python(tmp_path, "if index == 1:\n  time.sleep(1)\n  sys.exit(3)\ntime.sleep(600)\n")
  started = time.monotonic()
  rc, out = _run(["bash", LOCAL_SH, "2"], tmp_path, timeout=60, PYTHON=python, GRACE_S="2")
  assert rc == 3, out
  assert "local.sh: FAILED: worker 1 exited with status 3" in out
  assert time.monotonic() - started < 30
  pid0 = int(dict(WORKER_PID.findall(out))["0"])
  with pytest.raises(ProcessLookupError):
    os.kill(pid0, 0)


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
  source = data.load_idx(helpers.make_idx_dir(str(tmp_path / "data"), num=64), "train")
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


def _fake_strategy(cluster, task_type, task_id):
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(tf.train.ClusterSpec(cluster), task_type=task_type,
                                                                  task_id=task_id)
  return types.SimpleNamespace(cluster_resolver=resolver)


def test_is_chief():
  workers = {"worker": ["a:1", "b:1"]}
  assert strategy_lib.is_chief(_fake_strategy(workers, "worker", 0))
  assert not strategy_lib.is_chief(_fake_strategy(workers, "worker", 1))
  with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
  assert strategy_lib.is_chief(_fake_strategy(with_chief, "chief", 0))
  assert not strategy_lib.is_chief(_fake_strategy(with_chief, "worker", 0))
  assert strategy_lib.is_chief(tf.distribute.get_strategy())  # One process.


def test_slurm_cluster_becomes_tf_config():
  # Ranks follow Slurm's node-list order (node9 before node10), not the names' sort order.
  env = dict(SLURM_PROCID="2", SLURM_STEP_NUM_TASKS="4", SLURM_STEP_NODELIST="node[9-10],gpu07",
             SLURM_STEP_TASKS_PER_NODE="1,2,1", SLURMD_NODENAME="node10")
  workers = ["node9:8888", "node10:8888", "node10:8889", "gpu07:8888"]
  slurm_tf_config = strategy_lib._slurm_tf_config  # pylint: disable=protected-access
  assert slurm_tf_config(env) == {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 2}}
  one_per_node = dict(SLURM_PROCID="0", SLURM_STEP_NODELIST="gpu[07-08]", SLURM_STEP_TASKS_PER_NODE="1(x2)")
  assert slurm_tf_config(one_per_node)["cluster"] == {"worker": ["gpu07:8888", "gpu08:8888"]}
  with pytest.raises(ValueError, match="distribution=block"):
    slurm_tf_config(dict(env, SLURMD_NODENAME="gpu07"))
  with pytest.raises(ValueError, match="SLURM_STEP_NUM_TASKS=3"):
    slurm_tf_config(dict(env, SLURM_STEP_NUM_TASKS="3"))
  with pytest.raises(ValueError, match="SLURM_PROCID is not set"):
    slurm_tf_config({k: v for k, v in env.items() if k != "SLURM_PROCID"})


def test_cluster_from_hosts_and_errors(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  cfg = config_lib.make_config(strategy="multi_worker_mirrored", cluster="hosts", worker_hosts="h1:5,h2:6",
                              task_index=1)
  resolver = strategy_lib._cluster_resolver(cfg)  # pylint: disable=protected-access
  assert json.loads(os.environ["TF_CONFIG"]) == {"cluster": {"worker": ["h1:5", "h2:6"]},
                                                 "task": {"type": "worker", "index": 1}}
  assert resolver.cluster_spec().as_dict() == {"worker": ["h1:5", "h2:6"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)
  with pytest.raises(ValueError, match="task_index"):
    strategy_lib._cluster_resolver(config_lib.make_config(cluster="hosts", worker_hosts="h1:5", task_index=1))
  monkeypatch.delenv("TF_CONFIG")
  with pytest.raises(ValueError, match="needs a cluster"):
    strategy_lib._cluster_resolver(config_lib.make_config(cluster="tf_config"))
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    strategy_lib._cluster_resolver(config_lib.make_config(cluster="tf_config"))


def test_fingerprint_sees_every_value(tmp_path):
  v = tf.Variable([1.0, 2.0])
  ckpt = tf.train.Checkpoint(v=v)
  first = checkpoint_lib.fingerprint(ckpt.write(str(tmp_path / "a")))
  assert checkpoint_lib.fingerprint(ckpt.write(str(tmp_path / "b"))) == first
  v.assign([1.0, 2.0000002])
  assert checkpoint_lib.fingerprint(ckpt.write(str(tmp_path / "c"))) != first


def _cuda_of_each_worker(tmp_path, num_workers, **env):
  python = _fake_python(tmp_path, "print('cuda', os.environ.get('CUDA_VISIBLE_DEVICES'))\n")
  rc, out = _run(["bash", LOCAL_SH, str(num_workers), f"--workdir={tmp_path / 'w'}"], tmp_path, timeout=60,
                 PYTHON=python, **env)
  return rc, out, {int(i): v for i, v in re.findall(r"\[worker (\d+)\] cuda (\S+)", out)}


def test_local_sh_shares_the_gpus_between_workers(tmp_path):
  """With GPUs and no GPUS_PER_WORKER each worker gets its share; impossible requests are refused."""
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, PATH=_fake_gpus(tmp_path, 4))
  assert rc == 0 and cuda == {0: "0,1", 1: "2,3"}, out
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, CUDA_VISIBLE_DEVICES="3,5,6")  # Only the visible ones count.
  assert rc == 0 and cuda == {0: "3", 1: "5"}, out
  assert "do not split evenly" in out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 3, PATH=_fake_gpus(tmp_path, 2))
  assert rc == 2 and "3 workers but only 2 GPU(s)" in out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 2, PATH=_fake_gpus(tmp_path, 4), GPUS_PER_WORKER="3")
  assert rc == 2 and "needs 6 GPUs; this machine has 4" in out
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2)  # No GPU: every worker on the CPU.
  assert rc == 0 and cuda == {0: "None", 1: "None"}, out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 2, GPUS_PER_WORKER="1")
  assert rc == 2 and "no GPU" in out


def test_local_sh_keeps_logs_local_for_a_remote_workdir(tmp_path):
  python = _fake_python(tmp_path, "print('hello')\n")
  rc, out = _run(["bash", LOCAL_SH, "2", "--workdir=gs://bucket/run"], tmp_path, timeout=60, PYTHON=python)
  assert rc == 0, out
  log_dir = re.search(r"logs in (\S+)", out).group(1)
  assert not log_dir.startswith("gs:") and os.path.exists(os.path.join(log_dir, "worker_1.log"))
  assert not os.path.exists(os.path.join(REPO, "gs:"))


# --------------------------------------------------------------------------- workers started without local.sh


def _start_workers(tmp_path, args_of_worker, timeout_s=STAGE_TIMEOUT_S):
  """Starts one `python -m gan_dist.main` per entry of `args_of_worker` with a TF_CONFIG of localhost ports, each in
  its own session and logging to tmp_path/worker_<i>.log; returns the Popen objects."""
  import socket  # pylint: disable=g-import-not-at-top
  socks = [socket.socket() for _ in args_of_worker]
  for sock in socks:
    sock.bind(("localhost", 0))
  hosts = [f"localhost:{sock.getsockname()[1]}" for sock in socks]
  for sock in socks:
    sock.close()
  procs = []
  for i, args in enumerate(args_of_worker):
    env = dict(_env(tmp_path), PYTHONUNBUFFERED="1", TF_CONFIG=json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}))
    log = open(tmp_path / f"worker_{i}.log", "w")
    procs.append(subprocess.Popen([sys.executable, "-m", "gan_dist.main", *args, "--strategy=multi_worker_mirrored"],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
  return procs


def _reap(procs):
  for proc in procs:
    for sig in (signal.SIGCONT, signal.SIGKILL):
      _kill_group(proc.pid, sig)
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      pass


@pytest.mark.parametrize("victim,how", [(1, signal.SIGKILL), (0, signal.SIGSTOP)], ids=["worker1_killed",
                                                                                        "chief_frozen"])
def test_survivor_of_a_dead_or_frozen_peer_exits_by_itself(tmp_path, victim, how):
  """No launcher watching (as under Slurm or Kubernetes): when a worker dies, or freezes with its sockets open, the
  other exits within 60 s with exit code 5 and an error naming the cause; relaunched, the cluster resumes."""
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = str(tmp_path / "workdir")
  flags = TRAIN_FLAGS + [f"--data_dir={data_dir}", f"--workdir={workdir}", "--train_steps=100000",
                         "--checkpoint_every=4", "--peer_timeout_s=10"]
  procs = _start_workers(tmp_path, [flags, flags])
  survivor = 1 - victim
  try:
    _wait_for_log(str(tmp_path / f"worker_{survivor}.log"), "Saved checkpoint", procs[survivor])
    os.kill(procs[victim].pid, how)
    hit = time.monotonic()
    rc = procs[survivor].wait(timeout=60)
    elapsed = time.monotonic() - hit
    log = (tmp_path / f"worker_{survivor}.log").read_text()
    assert rc == 5, _tail(log)
    assert elapsed < 60
    line = [l for l in log.splitlines() if l.startswith("error: ")][-1]
    assert line.startswith("error: peer failure: ") and (f"worker {victim}" in line), line
  finally:
    _reap(procs)
  if how != signal.SIGSTOP:
    return
  # Relaunched, the cluster continues from the last checkpoint both workers saved.
  latest = int(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).rsplit("-", 1)[1])
  flags = [f for f in flags if not f.startswith("--train_steps")] + [f"--train_steps={latest + 2}"]
  procs = _start_workers(tmp_path, [flags, flags])
  try:
    for i, proc in enumerate(procs):
      assert proc.wait(timeout=STAGE_TIMEOUT_S) == 0, _tail((tmp_path / f"worker_{i}.log").read_text())
      log = (tmp_path / f"worker_{i}.log").read_text()
      assert f"at step {latest}" in log and f"Done at step {latest + 2}" in log
  finally:
    _reap(procs)


def test_workers_with_different_flags_are_refused_before_writing(tmp_path):
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = tmp_path / "workdir"
  flags = TRAIN_FLAGS + [f"--data_dir={data_dir}", f"--workdir={workdir}", "--train_steps=4"]
  procs = _start_workers(tmp_path, [flags, flags + ["--g_lr=3e-4"]])
  try:
    for i, proc in enumerate(procs):
      assert proc.wait(timeout=STAGE_TIMEOUT_S) == 2
      line = [l for l in (tmp_path / f"worker_{i}.log").read_text().splitlines() if l.startswith("error: ")][-1]
      assert "the workers were started with different flags: --g_lr" in line, line
      assert f"--g_lr={0.0002 if i == 0 else 0.0003}" in line
  finally:
    _reap(procs)
  assert not workdir.exists()


def test_step_agreement_compares_the_extremes():
  """Three workers resumed from steps 10, 30 and 20 disagree (a sum-based check would pass on the one at 20)."""
  fields = ("a", "b")
  rows = np.array([[1.0, 2.0, 10], [1.0, 2.0, 30], [1.0, 2.0, 20]])
  assert strategy_lib.disagreement(fields, rows) == ([], (10, 30))
  rows[1, 1] = 5.0
  assert strategy_lib.disagreement(fields, rows) == (["b"], (10, 30))
  assert strategy_lib.disagreement(fields, np.array([[1.0, 2.0, 20]] * 3)) == ([], None)
