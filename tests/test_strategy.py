"""strategy.py in one process: the CPU split, launcher detection and what a failed collective says about peers.

The multi-process parts (clusters from TF_CONFIG, Slurm and hosts; dead and frozen peers) are in
tests/test_multiworker.py.
"""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import strategy as strategy_lib


def test_the_test_process_runs_two_logical_cpus():
  assert len(tf.config.list_logical_devices("CPU")) == 2  # conftest.py split it with strategy.split_cpu(2).
  strategy_lib.split_cpu(2)  # Asking again for the same split is allowed after TensorFlow started...
  with pytest.raises(RuntimeError, match="must be applied before TensorFlow initialises its devices"):
    strategy_lib.split_cpu(3)  # ...another one is not.


@pytest.mark.parametrize("env,workers", [
    ({}, 1),
    ({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 0}}'}, 3),
    ({"TF_CONFIG": '{"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}}'}, 2),
    ({"TF_CONFIG": "not json"}, 1),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, 4),
    ({"SLURM_NTASKS": "4"}, 1),  # An allocation without a job step (sbatch's shell) runs one process.
])
def test_cluster_size_from_environment(env, workers):
  assert strategy_lib.cluster_size_from_environment(env) == workers


@pytest.mark.parametrize("text,expected", [
    ("Task /job:worker/replica:0/task:1 stopped sending heartbeats", "worker 1 stopped sending heartbeats"),
    ("RPC to /CoordinationService/Heartbeat timed out", "coordination service on worker 0 stopped answering"),
    ("Socket closed from /job:worker/task:0", "lost the connection to worker 0 (Socket closed)"),
    ("Collective ops is aborted by: peer is gone", "a collective with another worker failed: Collective ops"),
    ("Out of memory allocating a tensor", None),
])
def test_describe_peer_failure(text, expected):
  described = strategy_lib.describe_peer_failure(tf.errors.UnavailableError(None, None, text))
  if expected is None:
    assert described is None
  else:
    assert expected in described


def test_peer_failure_only_in_a_cluster(mirrored2):
  error = tf.errors.UnavailableError(None, None, "Task /job:worker/replica:0/task:1 stopped sending heartbeats")
  assert strategy_lib.peer_failure(mirrored2, error) is None  # One process: there is no peer to blame.

  class _Resolver:
    task_type, task_id = "worker", 0

    def cluster_spec(self):
      return tf.train.ClusterSpec({"worker": ["a:1", "b:2"]})

  class _ClusterStrategy:
    cluster_resolver = _Resolver()

  failure = strategy_lib.peer_failure(_ClusterStrategy(), error)
  assert isinstance(failure, errors.PeerFailureError) and failure.exit_code == errors.EXIT_PEER == 5
  assert "worker 1 stopped sending heartbeats" in str(failure) and "Relaunch every worker" in str(failure)


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


@pytest.mark.parametrize("local,others,expected", [(False, 0.0, False), (False, 1.0, True), (True, 0.0, True)])
def test_any_worker_is_true_when_one_worker_votes_yes(mirrored2, monkeypatch, local, others, expected):
  """One vote per replica, gathered: any yes wins. In one process the flag itself, without a collective. (Two real
  worker processes voting: tests/test_multiworker.py, stage 0.)"""
  assert strategy_lib.any_worker(mirrored2, local) is local
  sent = []

  def gather_rows(strategy, row):
    sent.append(row.tolist())
    return np.array([row, [others]])  # This worker's row, then the other worker's.

  monkeypatch.setattr(strategy_lib, "gather_rows", gather_rows)
  assert strategy_lib.any_worker(_fake_strategy({"worker": ["a:1", "b:1"]}, "worker", 1), local) is expected
  assert sent == [[float(local)]]


def test_slurm_cluster_becomes_tf_config():
  # Ranks follow Slurm's node-list order (node9 before node10), not the names' sort order.
  env = dict(SLURM_PROCID="2", SLURM_STEP_NUM_TASKS="4", SLURM_STEP_NODELIST="node[9-10],gpu07",
             SLURM_STEP_TASKS_PER_NODE="1,2,1", SLURMD_NODENAME="node10")
  workers = ["node9:8888", "node10:8888", "node10:8889", "gpu07:8888"]
  slurm_tf_config = strategy_lib._slurm_tf_config  # pylint: disable=protected-access
  assert slurm_tf_config(env) == {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 2}}
  one_per_node = dict(SLURM_PROCID="0", SLURM_STEP_NODELIST="gpu[07-08]", SLURM_STEP_TASKS_PER_NODE="1(x2)")
  assert slurm_tf_config(one_per_node)["cluster"] == {"worker": ["gpu07:8888", "gpu08:8888"]}
  # Two jobs on one node take different ports; a requeued job (same id) the same ones.
  job_a, job_b = dict(one_per_node, SLURM_JOB_ID="41"), dict(one_per_node, SLURM_JOB_ID="42")
  assert slurm_tf_config(job_a)["cluster"] == {"worker": ["gpu07:11312", "gpu08:11312"]}
  assert slurm_tf_config(job_b)["cluster"] == {"worker": ["gpu07:11344", "gpu08:11344"]}
  ports = {strategy_lib.slurm_port_base({"SLURM_JOB_ID": str(j)}) for j in range(strategy_lib.SLURM_PORT_BLOCKS)}
  assert len(ports) == strategy_lib.SLURM_PORT_BLOCKS and max(ports) + strategy_lib.SLURM_PORTS_PER_JOB <= 32768
  with pytest.raises(errors.UserError, match="33 tasks on one node"):
    slurm_tf_config(dict(one_per_node, SLURM_STEP_NODELIST="gpu07", SLURM_STEP_TASKS_PER_NODE="33",
                         SLURM_STEP_NUM_TASKS="33"))
  with pytest.raises(errors.UserError, match="distribution=block"):
    slurm_tf_config(dict(env, SLURMD_NODENAME="gpu07"))
  with pytest.raises(errors.UserError, match="SLURM_STEP_NUM_TASKS=3"):
    slurm_tf_config(dict(env, SLURM_STEP_NUM_TASKS="3"))
  with pytest.raises(errors.UserError, match="SLURM_PROCID is not set"):
    slurm_tf_config({k: v for k, v in env.items() if k != "SLURM_PROCID"})


def test_cluster_from_hosts_and_errors(monkeypatch):
  # _cluster_resolver writes os.environ itself: setting first makes monkeypatch remove its value afterwards (a
  # leaked two-worker TF_CONFIG makes every later in-process run in this worker refuse to start).
  monkeypatch.setenv("TF_CONFIG", "")
  monkeypatch.delenv("TF_CONFIG")
  cfg = config_lib.make_config(strategy="multi_worker_mirrored", cluster="hosts", worker_hosts="h1:5,h2:6",
                              task_index=1)
  resolver = strategy_lib._cluster_resolver(cfg)  # pylint: disable=protected-access
  assert json.loads(os.environ["TF_CONFIG"]) == {"cluster": {"worker": ["h1:5", "h2:6"]},
                                                 "task": {"type": "worker", "index": 1}}
  assert resolver.cluster_spec().as_dict() == {"worker": ["h1:5", "h2:6"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)
  with pytest.raises(errors.UserError, match="task_index"):
    strategy_lib._cluster_resolver(config_lib.make_config(cluster="hosts", worker_hosts="h1:5", task_index=1))
  monkeypatch.delenv("TF_CONFIG")
  with pytest.raises(errors.UserError, match="needs a cluster"):
    strategy_lib._cluster_resolver(config_lib.make_config(cluster="tf_config"))
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(errors.UserError, match="not valid JSON"):
    strategy_lib._cluster_resolver(config_lib.make_config(cluster="tf_config"))


def test_step_agreement_compares_the_extremes():
  """Three workers resumed from steps 10, 30 and 20 disagree (a sum-based check would pass on the one at 20)."""
  fields = ("a", "b")
  rows = np.array([[1.0, 2.0, 10], [1.0, 2.0, 30], [1.0, 2.0, 20]])
  assert strategy_lib.disagreement(fields, rows) == ([], (10, 30))
  rows[1, 1] = 5.0
  assert strategy_lib.disagreement(fields, rows) == (["b"], (10, 30))
  assert strategy_lib.disagreement(fields, np.array([[1.0, 2.0, 20]] * 3)) == ([], None)
