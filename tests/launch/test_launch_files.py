"""Launch files that cannot run here (Slurm, Kubernetes) checked offline: command lines, YAML and TF_CONFIG.

Each script runs as a subprocess with a faked environment (no GPU visible) and a timeout; none of them starts
TensorFlow. Those tests are marked slow, as every test that starts a process is; the ones that only read a template
are the fast tier. launch/local.sh: tests/launch/test_local_sh.py.
"""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(REPO, "launch")
K8S = os.path.join(LAUNCH, "k8s")
TIMEOUT_S = 30  # These scripts only build command lines; anything slower is a hang.


def _run(cmd, env=None, **kwargs):
  """Runs `cmd` from the repo root with `env` added to a clean environment; kills it after TIMEOUT_S."""
  full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TF_CONFIG"))}
  full_env["CUDA_VISIBLE_DEVICES"] = ""  # No test process sees a GPU it does not mean to use.
  full_env.update(env or {})
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs)


# ---------------------------------------------------------------------------------------------------------- Slurm


def _slurm_dry_run(args, **env):
  return _run(["bash", os.path.join(LAUNCH, "slurm.sbatch"), *args],
              env=dict(DRY_RUN="1", SLURM_SUBMIT_DIR=REPO, **env))


@pytest.mark.slow
def test_slurm_builds_srun_command_from_slurm_environment():
  result = _slurm_dry_run(["--flagfile=configs/dcgan.cfg", "--workdir=/shared/runs/dcgan", "--batch_size=1024"],
                          SLURM_JOB_NUM_NODES="4", SLURM_GPUS_PER_NODE="a100:8", PYTHON="/venv/bin/python")
  assert result.returncode == 0, result.stderr
  cmd = shlex.split(result.stdout)
  assert cmd[0] == "srun"
  srun_opts = cmd[1:cmd.index("/venv/bin/python")]
  assert sorted(srun_opts) == sorted(["--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                                      "--kill-on-bad-exit=1"])
  # The launcher's flags come last: absl keeps the last value, so a flagfile or argument cannot override them.
  assert cmd[cmd.index("/venv/bin/python"):] == [
      "/venv/bin/python", "-m", "gan_dist.main", "--flagfile=configs/dcgan.cfg", "--workdir=/shared/runs/dcgan",
      "--batch_size=1024", "--strategy=multi_worker_mirrored", "--cluster=slurm"]


@pytest.mark.slow
def test_slurm_without_gpus_and_quoting():
  result = _slurm_dry_run(["--workdir", "/shared/my runs/x"], SLURM_JOB_NUM_NODES="2")
  assert result.returncode == 0, result.stderr
  cmd = shlex.split(result.stdout)
  assert not any(a.startswith("--gpus") for a in cmd)
  assert cmd[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
  assert cmd[-4:] == ["--workdir", "/shared/my runs/x", "--strategy=multi_worker_mirrored", "--cluster=slurm"]


@pytest.mark.slow
@pytest.mark.parametrize("args,env,message", [
    (["--flagfile=configs/dcgan.cfg"], dict(SLURM_JOB_NUM_NODES="2"), "--workdir"),
    (["--workdir=/tmp/run"], dict(SLURM_JOB_NUM_NODES="2"), "node-local"),
    (["--workdir=/shared/run"], {}, "SLURM_JOB_NUM_NODES"),
    (["--workdir=/shared/run"], dict(SLURM_JOB_NUM_NODES="2", SLURM_GPUS_PER_NODE="many"), "GPU count"),
])
def test_slurm_refuses_bad_submissions(args, env, message):
  result = _slurm_dry_run(args, **env)
  assert result.returncode == 2
  assert message in result.stderr
  assert "srun" not in result.stdout


@pytest.mark.slow
def test_slurm_reads_the_workdir_in_flagfiles(tmp_path):
  """--workdir as gan_dist will read it: set in a (nested) flagfile, overridden by a later one on the command line."""
  inner, outer = tmp_path / "inner.cfg", tmp_path / "outer.cfg"
  inner.write_text("--workdir=/tmp/node_local_run\n")
  outer.write_text(f"--batch_size=64\n--flagfile={inner}\n")
  result = _slurm_dry_run([f"--flagfile={outer}"], SLURM_JOB_NUM_NODES="2")
  assert result.returncode == 2 and "--workdir=/tmp/node_local_run is node-local" in result.stderr, result.stderr
  result = _slurm_dry_run([f"--flagfile={outer}", "--workdir=/shared/run"], SLURM_JOB_NUM_NODES="2")
  assert result.returncode == 0, result.stderr
  result = _slurm_dry_run(["--workdir=/shared/run", f"--flagfile={outer}"], SLURM_JOB_NUM_NODES="2")
  assert result.returncode == 2 and "node-local" in result.stderr, result.stderr
  result = _slurm_dry_run(["--workdir=/shared/run", "--flagfile=missing.cfg"], SLURM_JOB_NUM_NODES="2")
  assert result.returncode == 2 and "slurm.sbatch: cannot read the flagfile 'missing.cfg'" in result.stderr
  assert "srun" not in result.stdout


@pytest.mark.slow
def test_slurm_runs_python3_by_default():
  result = _slurm_dry_run(["--workdir=/shared/run"], SLURM_JOB_NUM_NODES="1")
  assert result.returncode == 0, result.stderr
  assert shlex.split(result.stdout)[4:7] == ["python3", "-m", "gan_dist.main"]


def _fake_slurm(tmp_path, srun_rc, job_state):
  """A PATH with an `srun` that exits `srun_rc` and an `scontrol` that shows `job_state` and records its other
  commands in tmp_path/scontrol.log: the batch script's own logic, without Slurm (test_slurm_cluster.py: with)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(f"#!/bin/sh\necho \"srun $*\"\nexit {srun_rc}\n")
  (bin_dir / "scontrol").write_text(
      "#!/bin/sh\nif [ \"$1\" = show ]; then\n  echo \"JobId=$3 JobName=gan_dist\"\n"
      f"  echo \"   {job_state} Dependency=(null)\"\n  exit 0\nfi\n"
      f"echo \"$*\" >> {tmp_path / 'scontrol.log'}\n")
  for tool in bin_dir.iterdir():
    tool.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


def _slurm_batch(tmp_path, args, srun_rc=0, job_state="JobState=RUNNING Reason=None"):
  """Runs slurm.sbatch past its srun, as a batch shell would, in the submit directory tmp_path/submit."""
  submit = tmp_path / "submit"
  submit.mkdir()
  return _run(["bash", os.path.join(LAUNCH, "slurm.sbatch"), *args],
              env=dict(PATH=_fake_slurm(tmp_path, srun_rc, job_state), SLURM_SUBMIT_DIR=str(submit),
                       SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="1"))


@pytest.mark.slow
def test_slurm_creates_a_local_workdir_and_not_a_remote_one(tmp_path):
  result = _slurm_batch(tmp_path, ["--workdir=gs://bucket/run"])
  assert result.returncode == 0, result.stderr
  assert "--workdir=gs://bucket/run" in result.stdout  # srun ran.
  assert os.listdir(tmp_path / "submit") == []  # No local "gs:" folder.
  shutil.rmtree(tmp_path / "submit")
  shutil.rmtree(tmp_path / "bin")
  result = _slurm_batch(tmp_path, [f"--workdir={tmp_path / 'shared' / 'run'}"])
  assert result.returncode == 0 and (tmp_path / "shared" / "run").is_dir(), result.stderr


SAVED = "every task saved a checkpoint or stopped before training"
KILLED_STARTING = "SIGTERM ended a task while it started, with nothing to save"


@pytest.mark.slow
@pytest.mark.parametrize("srun_rc,job_state,requeued", [
    (75, "JobState=RUNNING Reason=None", True),  # The --signal before the time limit, preemption, scancel --signal.
    (75, "JobState=COMPLETING Reason=TimeLimit", True),  # The time limit itself passed while the tasks saved.
    (75, "JobState=COMPLETING Reason=None", False),  # A plain scancel: final.
    (143, "JobState=RUNNING Reason=None", True),  # SIGTERM while a task imported TensorFlow or connected.
    (143, "JobState=COMPLETING Reason=None", False),
    (1, "JobState=RUNNING Reason=None", False),  # A failure: final.
], ids=["running", "time_limit", "cancelled", "killed_starting", "killed_starting_cancelled", "failed"])
def test_slurm_requeues_after_a_save_or_a_stop_while_starting_unless_the_job_was_cancelled(tmp_path, srun_rc,
                                                                                           job_state, requeued):
  result = _slurm_batch(tmp_path, ["--workdir=gs://bucket/run"], srun_rc=srun_rc, job_state=job_state)
  log = tmp_path / "scontrol.log"
  what = {75: SAVED, 143: KILLED_STARTING}.get(srun_rc)
  if requeued:
    assert result.returncode == 0, result.stderr
    assert f"slurm.sbatch: {what}; requeueing job 4242 (requeue 1 of 10)" in result.stderr
    assert log.read_text() == "requeue 4242\n"
  else:
    assert result.returncode == srun_rc, result.stderr
    if what:
      assert (f"slurm.sbatch: {what}; not requeueing job 4242: it was cancelled (scancel) or Slurm is ending it "
              "(JobState=COMPLETING Reason=None)") in result.stderr
    else:
      assert "requeueing" not in result.stderr
    assert not log.exists()


def test_slurm_sbatch_header():
  with open(os.path.join(LAUNCH, "slurm.sbatch")) as f:
    directives = [line.split(None, 1)[1].strip() for line in f if line.startswith("#SBATCH")]
  assert "--ntasks-per-node=1" in directives
  assert any(d.startswith("--gpus-per-node=") for d in directives)
  assert any(d.startswith("--signal=TERM@") for d in directives)  # Time to save before the time limit.
  assert "--requeue" in directives and "--open-mode=append" in directives  # It requeues itself, one log for all.


# ------------------------------------------------------------------------------------------------------ Kubernetes

K8S_PARAMS = dict(IMAGE="registry.example.com/gan_dist:1", PVC="gan-runs", WORKDIR="/runs/dcgan", NUM_WORKERS="3",
                  GPUS_PER_WORKER="4", ARGS="--flagfile=configs/dcgan.cfg --batch_size=768", JOB_NAME="dcgan-a")


def _render(*files, **params):
  return _run([os.path.join(K8S, "render.sh"), *files], env=params)


def _rendered():
  result = _render(**K8S_PARAMS)
  assert result.returncode == 0, result.stderr
  docs = list(yaml.safe_load_all(result.stdout))
  return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("name", ["gan_dist.yaml", "tensorboard.yaml"])
def test_k8s_templates_are_valid_yaml(name):
  with open(os.path.join(K8S, name)) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
  assert docs and all({"apiVersion", "kind", "metadata", "spec"} <= set(d) for d in docs)


@pytest.mark.slow
def test_k8s_job_and_service():
  docs = _rendered()
  job = docs["Job", "dcgan-a"]
  service = docs["Service", "dcgan-a"]
  spec = job["spec"]
  assert spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] == 3
  pod = spec["template"]["spec"]
  assert pod["subdomain"] == "dcgan-a" and pod["restartPolicy"] == "Never"
  # The headless Service selects exactly the Job's pods.
  assert service["spec"]["clusterIP"] == "None"
  labels = spec["template"]["metadata"]["labels"]
  assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
  tensorboard = docs["Deployment", "dcgan-a-tensorboard"]["spec"]["template"]["metadata"]["labels"]
  assert not all(tensorboard.get(k) == v for k, v in service["spec"]["selector"].items())  # Not TensorBoard's pod.
  container = pod["containers"][0]
  assert container["image"] == K8S_PARAMS["IMAGE"]
  assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
  assert container["resources"]["requests"] == {"cpu": "8", "memory": "32Gi"}
  volumes = {v["name"]: v for v in pod["volumes"]}
  assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == "gan-runs"
  # NCCL inside a multi-GPU pod needs a memory-backed /dev/shm larger than the default 64 MB.
  assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
  assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
  assert pod["terminationGracePeriodSeconds"] >= 120  # Time for the SIGTERM checkpoint.
  assert {p["containerPort"] for p in container["ports"]} == {p["port"] for p in service["spec"]["ports"]}


@pytest.mark.slow
def test_k8s_pod_script_builds_tf_config_for_each_index(tmp_path):
  """Runs the container's own script with bash, a fake `python3` recording what it was started with."""
  container = _rendered()["Job", "dcgan-a"]["spec"]["template"]["spec"]["containers"][0]
  assert container["command"] == ["/bin/bash", "-c"]
  script = container["args"][0]
  pod_env = {e["name"]: e["value"] for e in container["env"]}
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake_python = bin_dir / "python3"
  fake_python.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                         "tf_config = json.loads(os.environ['TF_CONFIG'])\n"
                         "print(json.dumps({'argv': sys.argv[1:], 'tf_config': tf_config}))\n")
  fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
  hosts = [f"dcgan-a-{i}.dcgan-a:2222" for i in range(3)]
  for index in range(3):
    env = dict(pod_env, JOB_COMPLETION_INDEX=str(index), PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = _run(container["command"] + [script], env=env)
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout.strip().splitlines()[-1])
    assert started["tf_config"] == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    assert started["argv"] == ["-m", "gan_dist.main", "--flagfile=configs/dcgan.cfg", "--batch_size=768",
                               "--strategy=multi_worker_mirrored", "--cluster=tf_config", "--workdir=/runs/dcgan"]


@pytest.mark.slow
def test_k8s_tensorboard():
  docs = _rendered()
  deployment = docs["Deployment", "dcgan-a-tensorboard"]
  pod = deployment["spec"]["template"]["spec"]
  container = pod["containers"][0]
  assert "--logdir=/runs/dcgan/tensorboard" in container["command"]
  assert container["volumeMounts"][0]["readOnly"] is True
  assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "gan-runs"
  service = docs["Service", "dcgan-a-tensorboard"]
  assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [
    (dict(IMAGE=""), "set IMAGE"),
    (dict(WORKDIR="/data/x"), "under /runs"),
    (dict(NUM_WORKERS="two"), "NUM_WORKERS"),
    (dict(ARGS='--workdir="x"'), "quotes"),
    (dict(MEMORY_REQUEST="lots"), "memory quantity"),
    (dict(CPU_REQUEST="eight"), "CPU quantity"),
])
def test_k8s_render_refuses_bad_parameters(override, message):
  result = _render(**dict(K8S_PARAMS, **override))
  assert result.returncode == 2
  assert message in result.stderr


# ----------------------------------------------------------------------------------------------------- TensorBoard


@pytest.mark.slow
def test_tensorboard_script(tmp_path):
  result = _run([os.path.join(LAUNCH, "tensorboard.sh"), str(tmp_path)], env=dict(DRY_RUN="1", PORT="6123"))
  assert result.returncode == 0, result.stderr
  cmd = shlex.split(result.stdout)
  assert cmd[cmd.index("--logdir") + 1] == str(tmp_path / "tensorboard")
  assert cmd[cmd.index("--port") + 1] == "6123"
  assert _run([os.path.join(LAUNCH, "tensorboard.sh")]).returncode == 2
  # A folder of workdirs: all of them side by side.
  for name in ("a", "b"):
    os.makedirs(tmp_path / "runs" / name / "tensorboard")
  result = _run([os.path.join(LAUNCH, "tensorboard.sh"), str(tmp_path / "runs")], env=dict(DRY_RUN="1"))
  cmd = shlex.split(result.stdout)
  assert result.returncode == 0 and cmd[cmd.index("--logdir") + 1] == str(tmp_path / "runs"), result.stderr


@pytest.mark.slow
def test_tensorboard_script_follows_symbolic_links(tmp_path):
  """Workdirs linked into a folder of runs, and a link to that folder, are found (TensorBoard follows links too)."""
  os.makedirs(tmp_path / "elsewhere" / "a" / "tensorboard")
  os.makedirs(tmp_path / "linked_runs")
  os.symlink(tmp_path / "elsewhere" / "a", tmp_path / "linked_runs" / "a")
  os.symlink(tmp_path / "linked_runs", tmp_path / "link_to_runs")
  for folder in ("linked_runs", "link_to_runs"):
    result = _run([os.path.join(LAUNCH, "tensorboard.sh"), str(tmp_path / folder)], env=dict(DRY_RUN="1"))
    cmd = shlex.split(result.stdout)
    assert result.returncode == 0 and cmd[cmd.index("--logdir") + 1] == str(tmp_path / folder), result.stderr
    assert "does not exist yet" not in result.stderr
