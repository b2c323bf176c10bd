"""Builds the tf.distribute strategy named by --strategy, and answers "am I the chief?".

CPU-only hosts can be split into --num_cpu_replicas logical devices so that MirroredStrategy runs several replicas
without a GPU; that must happen before TensorFlow runs any op, so `make` is the first thing `main` does.
"""

import json
import os

from absl import logging
import tensorflow as tf


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
                       f"devices (it is set in strategy.make, the first thing main does): {e}") from None


def _cluster_resolver(cfg):
  """The cluster of a multi-worker run: TF_CONFIG, Slurm's environment, or --worker_hosts/--task_index."""
  if cfg.cluster == "slurm":
    return tf.distribute.cluster_resolver.SlurmClusterResolver()
  if cfg.cluster == "hosts":
    hosts = [h for h in cfg.worker_hosts.split(",") if h]
    if not hosts or not 0 <= cfg.task_index < len(hosts):
      raise ValueError(f"--cluster=hosts needs --worker_hosts=h1:p1,h2:p2,... and 0 <= --task_index < "
                       f"{len(hosts)}, got {cfg.worker_hosts!r} and {cfg.task_index}")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts},
                                          "task": {"type": "worker", "index": cfg.task_index}})
  if "TF_CONFIG" not in os.environ:
    raise ValueError("--strategy=multi_worker_mirrored needs a cluster: set TF_CONFIG (launch/local.sh does), "
                     "or pass --cluster=slurm, or --cluster=hosts --worker_hosts=... --task_index=...")
  return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def make(cfg) -> tf.distribute.Strategy:
  """Returns the strategy for `cfg.strategy`. Call before any other TensorFlow work."""
  gpus = tf.config.list_physical_devices("GPU")
  if cfg.strategy == "multi_worker_mirrored":
    if cfg.num_cpu_replicas > 1 and not gpus:
      split_cpu(cfg.num_cpu_replicas)
    implementation = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                      "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                      "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}[cfg.communication]
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=_cluster_resolver(cfg),
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
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
