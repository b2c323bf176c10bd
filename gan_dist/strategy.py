"""Builds the tf.distribute strategy named by --strategy, and answers "am I the chief?".

CPU-only hosts can be split into --num_cpu_replicas logical devices so that MirroredStrategy runs several replicas
without a GPU; that must happen before TensorFlow runs any op, so `make` comes first in `api.fit` (after only the
config checks, which run no op).

multi_worker_mirrored finds its cluster in TF_CONFIG (launch/local.sh, launch/k8s), Slurm's environment
(launch/slurm.sbatch) or --worker_hosts/--task_index; the latter two are turned into TF_CONFIG. Worker 0 is the chief.
Each worker runs one replica per local GPU, or one on the CPU; the global batch is split over all of them.
"""

import contextlib
import functools
import json
import os
import re
import signal
import threading
import zlib
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf
# Coordination-service settings (heartbeat timeout) have no public API; MultiWorkerMirroredStrategy keeps a
# configuration made before it is created.
from tensorflow.python.eager import context as tf_context
# Slurm's host-list syntax (node[1-3,7]) and task counts (2(x3),1); SlurmClusterResolver's own parsers.
from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm_lib

from gan_dist import config as config_lib
from gan_dist import errors


def split_cpu(num_replicas: int) -> None:
  """Splits the first physical CPU into `num_replicas` logical devices (before any op has run)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  current = tf.config.get_logical_device_configuration(cpu)
  if current is not None and len(current) == num_replicas:
    return
  try:
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
  except RuntimeError as e:
    raise RuntimeError(f"--num_cpu_replicas={num_replicas} must be applied before TensorFlow initialises its "
                       f"devices (it is set in strategy.make, before a run's first op): {e}") from None


# The workers' gRPC ports under Slurm. Jobs that share a node (several small jobs, or one per GPU) must not take
# the same port, so each job gets its own block of SLURM_PORTS_PER_JOB ports, chosen by its job id (a requeued job
# keeps its id, and so its ports); the tasks of a job on one node take consecutive ports of the block. Without a job
# id (a step started by hand), SlurmClusterResolver's 8888. Blocks stay below Linux's ephemeral range (32768).
SLURM_PORT_BASE = 8888
SLURM_JOB_PORT_BASE = 10000
SLURM_PORTS_PER_JOB = 32
SLURM_PORT_BLOCKS = 700


def slurm_port_base(env) -> int:
  """The first gRPC port of this Slurm job's tasks on each node (see SLURM_JOB_PORT_BASE)."""
  job = env.get("SLURM_JOB_ID", "")
  if not job.isdigit():
    return SLURM_PORT_BASE
  return SLURM_JOB_PORT_BASE + (int(job) % SLURM_PORT_BLOCKS) * SLURM_PORTS_PER_JOB


def _slurm_tf_config(env=None) -> dict:
  """TF_CONFIG of this Slurm task: one worker per task of the job step, worker i = Slurm rank i, rank 0 the chief.

  Built here rather than by SlurmClusterResolver, which sorts the hosts by name while Slurm numbers the tasks in
  node-list order (node[9-10]: rank 0 runs on node9, which sorts after node10), so that on such nodes each task
  would take another task's address. It would also run nvidia-smi (absent on CPU nodes) and rewrite
  CUDA_VISIBLE_DEVICES; here each task keeps the GPUs Slurm bound to it (--gpus-per-node with one task per node,
  as launch/slurm.sbatch does).

  Raises:
    errors.UserError: Slurm's variables are missing or disagree (e.g. a task distribution other than block).
  """
  env = os.environ if env is None else env
  try:
    nodes = slurm_lib.expand_hostlist(env["SLURM_STEP_NODELIST"])
    tasks_per_node = slurm_lib.expand_tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])
    rank = int(env["SLURM_PROCID"])
  except KeyError as e:
    raise errors.UserError(f"--cluster=slurm: {e.args[0]} is not set; start gan_dist with srun inside an allocation "
                           "(see launch/slurm.sbatch)") from None
  # Block distribution (Slurm's default): the first node's tasks get the first ranks, and so on.
  workers, hosts, base = [], [], slurm_port_base(env)
  if max(tasks_per_node) > SLURM_PORTS_PER_JOB:
    raise errors.UserError(f"--cluster=slurm: {max(tasks_per_node)} tasks on one node; at most {SLURM_PORTS_PER_JOB} "
                           "(one task per node with all its GPUs is what launch/slurm.sbatch runs)")
  for node, count in zip(nodes, tasks_per_node):
    workers += [f"{node}:{base + local}" for local in range(count)]
    hosts += [node] * count
  num_tasks = int(env.get("SLURM_STEP_NUM_TASKS", len(workers)))
  if len(workers) != num_tasks or not 0 <= rank < num_tasks:
    raise errors.UserError(f"--cluster=slurm: SLURM_STEP_NODELIST={env['SLURM_STEP_NODELIST']} with "
                           f"SLURM_STEP_TASKS_PER_NODE={env['SLURM_STEP_TASKS_PER_NODE']} gives {len(workers)} tasks, "
                           f"but SLURM_STEP_NUM_TASKS={num_tasks} and SLURM_PROCID={rank}")
  node = env.get("SLURMD_NODENAME")
  if node and node != hosts[rank]:
    raise errors.UserError(f"--cluster=slurm: rank {rank} runs on {node}, not on {hosts[rank]} as block distribution "
                           "would place it; run srun with --distribution=block (or one task per node)")
  return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}


def _hosts_tf_config(worker_hosts: str, task_index: int) -> dict:
  hosts = [h.strip() for h in worker_hosts.split(",") if h.strip()]
  if not hosts or not 0 <= task_index < len(hosts):
    raise errors.UserError(f"--cluster=hosts needs --worker_hosts=h1:p1,h2:p2,... and 0 <= --task_index < "
                           f"{len(hosts)}, got {worker_hosts!r} and {task_index}")
  return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}


def _cluster_resolver(cfg) -> tf.distribute.cluster_resolver.TFConfigClusterResolver:
  """The cluster of a multi-worker run: TF_CONFIG, Slurm's environment, or --worker_hosts/--task_index.

  Slurm and hosts are turned into TF_CONFIG, so that every cluster source ends in the same resolver (which counts
  this process's GPUs itself) and the log shows the same line whatever launched the run.
  """
  if cfg.cluster == "slurm":
    os.environ["TF_CONFIG"] = json.dumps(_slurm_tf_config())
  elif cfg.cluster == "hosts":
    os.environ["TF_CONFIG"] = json.dumps(_hosts_tf_config(cfg.worker_hosts, cfg.task_index))
  if not os.environ.get("TF_CONFIG"):
    raise errors.UserError("--strategy=multi_worker_mirrored needs a cluster: set TF_CONFIG (launch/local.sh does), "
                           "or pass --cluster=slurm, or --cluster=hosts --worker_hosts=... --task_index=...")
  try:
    tf_config = json.loads(os.environ["TF_CONFIG"])
  except json.JSONDecodeError as e:
    raise errors.UserError(f"TF_CONFIG is not valid JSON ({e}): {os.environ['TF_CONFIG']!r}") from None
  if not tf_config.get("cluster") or "task" not in tf_config:
    raise errors.UserError(f"TF_CONFIG needs 'cluster' and 'task' entries, got {os.environ['TF_CONFIG']!r}")
  logging.info("Cluster %s, this task %s", tf_config["cluster"], tf_config["task"])
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def cluster_size_from_environment(env=None) -> int:
  """How many worker processes the launcher started, as far as the environment tells (1 if it tells nothing).

  TF_CONFIG's cluster (launch/local.sh, launch/k8s, hand-made) or a Slurm job step with several tasks (srun).
  """
  env = os.environ if env is None else env
  tasks = 1
  if env.get("TF_CONFIG"):
    try:
      cluster = json.loads(env["TF_CONFIG"]).get("cluster", {})
      tasks = max(tasks, sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")))
    except (json.JSONDecodeError, AttributeError, TypeError):
      pass  # _cluster_resolver reports a broken TF_CONFIG when it is used.
  for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS") if env.get("SLURM_STEP_ID") is not None else ():
    if env.get(name, "").isdigit():
      tasks = max(tasks, int(env[name]))
      break
  return tasks


def _configure_failure_detection(cfg) -> None:
  """Makes a dead, frozen or unreachable worker fail the run on the others instead of hanging them.

  MultiWorkerMirroredStrategy starts TensorFlow's coordination service (on worker 0) unless one is configured:
  configured here first, with heartbeats that time out after --peer_timeout_s. A task that misses them is declared
  failed, and the service propagates the error to every other task, which aborts its pending collectives. Without
  this the default timeouts are minutes, and a frozen peer keeps the others waiting that long.
  """
  ctx = tf_context.context()
  if ctx.coordination_service is not None:
    return
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  spec = resolver.cluster_spec()
  from tensorflow.python.distribute import multi_worker_util  # pylint: disable=g-import-not-at-top
  from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2  # pylint: disable=g-import-not-at-top
  jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
          for job in ("chief", "worker") if job in spec.jobs]
  ctx.configure_coordination_service(
      service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
      heartbeat_timeout_in_ms=cfg.peer_timeout_s * 1000,
      cluster_register_timeout_in_ms=cfg.cluster_start_timeout_s * 1000,
      shutdown_barrier_timeout_in_ms=cfg.peer_timeout_s * 1000, coordinated_jobs=jobs)
  # Registration through a barrier: without it, the leader (worker 0) waits for missing workers without limit
  # (only the others time out); with it, every task gives up after --cluster_start_timeout_s.
  ctx._coordination_service_config.cluster_register_with_barrier = True  # pylint: disable=protected-access


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [""])[0][:200]


@contextlib.contextmanager
def _signals_end_the_process():
  """SIGTERM and SIGINT take their default action (the process ends by that signal) inside the block.

  The workers connect inside MultiWorkerMirroredStrategy's constructor, in TensorFlow's C++ code, which holds
  Python's lock: no Python signal handler (and no other thread) runs until it returns, so a Ctrl-C would wait as
  long as the cluster does. Nothing has been written yet, so ending at once loses nothing. (SIGTERM still waits for
  --cluster_start_timeout_s: TensorFlow's coordination agent installs a SIGTERM handler of its own as it starts.)
  Main thread only (signal handlers); elsewhere the block runs as it is.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {signum: signal.signal(signum, signal.SIG_DFL) for signum in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def make(cfg) -> tf.distribute.Strategy:
  """Returns the strategy for `cfg.strategy`. Call before any other TensorFlow work.

  Raises:
    errors.UserError: a single-process strategy in a process that its launcher started as one of several workers
      (two or more chiefs would write the same workdir), or a broken cluster description.
  """
  workers = cluster_size_from_environment()
  if cfg.strategy != "multi_worker_mirrored" and workers > 1:
    raise errors.UserError(
        f"--strategy={cfg.strategy} runs one process, but this process was started as one of {workers} workers "
        "(TF_CONFIG or srun): every worker would act as the chief and write the same workdir; use "
        "--strategy=multi_worker_mirrored, or unset TF_CONFIG / run one task")
  gpus = tf.config.list_physical_devices("GPU")
  if cfg.strategy == "multi_worker_mirrored":
    if cfg.num_cpu_replicas > 1:
      # MultiWorkerMirroredStrategy takes no device list: each worker runs one replica per GPU, or one on the CPU.
      logging.warning("--num_cpu_replicas=%d ignored under multi_worker_mirrored (a worker without GPUs runs one "
                      "CPU replica)", cfg.num_cpu_replicas)
    implementation = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                      "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                      "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}[cfg.communication]
    resolver = _cluster_resolver(cfg)
    _configure_failure_detection(cfg)
    cluster, task_type, task_index = resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id or 0
    not_started = (f"the cluster did not start within --cluster_start_timeout_s={cfg.cluster_start_timeout_s}: "
                   f"not every worker of {cluster} connected (this is {task_type} {task_index}); "
                   "start all of them (each with its own --task_index or TF_CONFIG, or through a launcher), check "
                   "their addresses and ports, then rerun")
    try:
      with _signals_end_the_process():
        # Where a run waits for its peers, and that a Ctrl-C now ends it at once (see _signals_end_the_process).
        logging.info("Waiting for the %d workers of the cluster to connect (at most --cluster_start_timeout_s=%d s)",
                     sum(len(hosts) for hosts in cluster.values()), cfg.cluster_start_timeout_s)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver,
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
      raise errors.PeerFailureError(f"{not_started} ({_first_line(e).split('. ')[0]})") from None
    except tf.errors.UnknownError as e:
      if "gRPC server" not in str(e):
        raise
      address = cluster[task_type][task_index]
      raise errors.UserError(f"{task_type} {task_index} cannot listen on {address}: the port is taken (by another "
                             "program, or by a worker started with the same --task_index); free it or change "
                             "--worker_hosts / TF_CONFIG") from None
  elif cfg.strategy == "mirrored":
    if gpus:
      devices = None  # All local GPUs.
      if cfg.num_cpu_replicas > 1:
        logging.warning("--num_cpu_replicas=%d ignored: this host has %d GPU(s)", cfg.num_cpu_replicas, len(gpus))
    else:
      split_cpu(cfg.num_cpu_replicas)
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
  elif cfg.strategy == "one_device":
    strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
  else:
    raise ValueError(f"Unknown --strategy={cfg.strategy!r}")
  logging.info("Strategy %s with %d replica(s) in sync", type(strategy).__name__, strategy.num_replicas_in_sync)
  return strategy


def task(strategy: tf.distribute.Strategy):
  """(task_type, task_id) of this process; (None, 0) outside a multi-worker cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return None, 0
  return resolver.task_type, resolver.task_id or 0


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """The chief is the only process that writes summaries, samples and flags.txt."""
  task_type, task_id = task(strategy)
  if task_type is None or task_type == "chief":
    return True
  cluster = getattr(strategy, "cluster_resolver").cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def check_workers_agree(strategy: tf.distribute.Strategy, cfg, step: int) -> None:
  """Checks, before anything is written, that all workers run the same resolved flags from the same step.

  One all-gather of [one hash per Config field..., step] from every replica; every worker compares the rows and
  raises the same error, naming the fields that differ (workers started with other flags, a flagfile that differs
  between machines) or the steps they resumed from (a workdir that is not shared storage). The step check compares
  the minimum and the maximum over the workers, so that no mix of steps can pass it.

  Raises:
    errors.UserError: the message names what differs and what this worker has.
  """
  if task(strategy)[0] is None:
    return
  fields = [f for f in config_lib.NAMES if f not in config_lib.PER_WORKER_FIELDS]
  # crc32 fits a float64 exactly; float64 collectives exist on every device type.
  local = np.array([zlib.crc32(repr(getattr(cfg, f)).encode()) for f in fields] + [step], np.float64)
  differ, steps = disagreement(fields, gather_rows(strategy, local))
  if differ:
    raise errors.UserError(
        f"the workers were started with different flags: {', '.join('--' + f for f in differ)} (this worker, "
        f"{task(strategy)[0]} {task(strategy)[1]}, has {'; '.join(f'--{f}={getattr(cfg, f)}' for f in differ)}); "
        "start every worker with the same command")
  if steps:
    raise errors.UserError(
        f"the workers resumed from different steps (from {steps[0]} to {steps[1]}; this worker {int(step)} from "
        f"{cfg.workdir}): every worker must see the chief's checkpoints; put --workdir on storage shared by all "
        "machines")


def disagreement(fields, rows: np.ndarray):
  """(fields whose hash differs between rows, (min step, max step) if the last column differs else None)."""
  differ = [f for i, f in enumerate(fields) if rows[:, i].min() != rows[:, i].max()]
  steps = rows[:, -1]
  return differ, ((int(steps.min()), int(steps.max())) if steps.min() != steps.max() else None)


def gather_rows(strategy: tf.distribute.Strategy, local: np.ndarray) -> np.ndarray:
  """All workers' `local` vectors, one row per replica: float64 [num_replicas, len(local)] (a collective)."""
  return _gather_fn(strategy)(tf.constant(np.asarray(local, np.float64)[None, :])).numpy()


@functools.lru_cache(maxsize=None)
def _gather_fn(strategy: tf.distribute.Strategy):
  """One tf.function per strategy for gather_rows: a function made at each call was traced at each call (every
  evaluation of a multi-worker run), and TensorFlow warned of excessive retracing from the fifth."""

  @tf.function(autograph=False, reduce_retracing=True)
  def gather(value):
    return strategy.gather(strategy.run(tf.identity, args=(value,)), axis=0)

  return gather


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
  """Whether `flag` is true on any worker: a collective in a multi-worker cluster (every worker must call it), this
  process's flag otherwise."""
  if task(strategy)[0] is None:
    return bool(flag)
  return bool(gather_rows(strategy, np.array([float(flag)])).max() > 0)


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Returns when every worker got here (no-op in one process): e.g. before exiting, so that no worker leaves while
  the chief still writes a checkpoint that a launcher would otherwise kill it in the middle of."""
  if task(strategy)[0] is not None:
    gather_rows(strategy, np.zeros([1]))


# TensorFlow errors of a collective whose peer died, froze or became unreachable (multi-worker runs).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
               tf.errors.CancelledError, tf.errors.InternalError)


def describe_peer_failure(error: Exception) -> Optional[str]:
  """What a failed collective says about the other workers, in a few words; None if it is not about them."""
  text = str(error)
  tasks = sorted({f"{job} {index}" for job, index in re.findall(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)", text)})
  who = " and ".join(tasks) or "another worker"
  if "stopped sending heartbeats" in text:
    return f"{who} stopped sending heartbeats for --peer_timeout_s (dead or frozen)"
  if "CoordinationService/Heartbeat" in text:
    return ("the coordination service on worker 0 stopped answering heartbeats for --peer_timeout_s (worker 0 is "
            "dead or frozen)")
  for symptom in ("Socket closed", "Connection reset by peer", "Connection refused", "failed to connect",
                  "Broken pipe"):
    if symptom in text:
      return f"lost the connection to {who} ({symptom})"
  if any(word in text for word in ("Collective", "collective", "Coordination", "coordination")):
    line = next((l.strip() for l in text.splitlines() if "ollective" in l or "oordination" in l), "")
    return f"a collective with {who} failed: {line[:200]}"
  return None


def peer_failure(strategy: tf.distribute.Strategy, error: Exception) -> Optional[errors.PeerFailureError]:
  """The PeerFailureError (exit code 5) a failed collective of a multi-worker run means, or None when the error is
  not about another worker (or this is one process): the caller re-raises it then."""
  cause = describe_peer_failure(error)
  if task(strategy)[0] is None or cause is None:
    return None
  return errors.PeerFailureError(
      f"peer failure: {cause} ({type(error).__name__}); this worker stops too. Relaunch every worker with the same "
      "command to resume from the last checkpoint")
