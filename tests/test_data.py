"""Data pipeline: IDX reading, normalisation, per-replica batches, order as a function of (seed, step)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import data
from tests import helpers


def _ctx(num_pipelines=1, pipeline_id=0, replicas=1):
  return tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


def _example_ids(batch):
  """Recovers example indices from the first pixel (written by helpers.make_idx_dir)."""
  return np.round((batch["images"].numpy()[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_roundtrip(tmp_path, gz):
  d = helpers.make_idx_dir(str(tmp_path), num=12, gz=gz)
  source = data.load_idx(d, "train")
  assert source.images.shape == (12, 28, 28, 1) and source.images.dtype == np.uint8
  assert source.labels.tolist() == [i % 10 for i in range(12)]
  assert source.num_classes == 10
  assert data.load_idx(d, "test").images.shape == (12, 28, 28, 1)


def test_idx_reader_rejects_bad_files(tmp_path):
  bad = tmp_path / "x-idx3-ubyte"
  bad.write_bytes(b"\x01\x02\x03\x04rest")
  with pytest.raises(data.DataError, match="not an IDX file"):
    data.read_idx(str(bad))
  truncated = tmp_path / "t-idx1-ubyte"
  truncated.write_bytes(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + b"abc")
  with pytest.raises(data.DataError, match="header says"):
    data.read_idx(str(truncated))


def test_real_mnist(mnist_dir):
  source = data.load(helpers.config_values(data_dir=mnist_dir))
  assert source.images.shape == (60000, 28, 28, 1)
  assert np.bincount(source.labels).tolist()[:3] == [5923, 6742, 5958]  # MNIST's published class counts.
  test = data.load(helpers.config_values(data_dir=mnist_dir, split="test"))
  assert len(test.images) == 10000


def test_class_filter(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=40)
  source = data.load(helpers.config_values(data_dir=d, class_filter=5))
  assert len(source.images) == 4 and set(source.labels.tolist()) == {5}
  assert source.num_classes == 10  # Conditional models still see every class.
  with pytest.raises(data.DataError, match="no examples"):
    data.load(helpers.config_values(data_dir=d, class_filter=12))


def test_offline_without_files_is_one_clear_line(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(data.DataError) as err:
    data.load(helpers.config_values(data_dir=str(empty), dataset="mnist"))
  message = str(err.value)
  assert "\n" not in message and "--data_dir" in message and "IDX" in message
  with pytest.raises(data.DataError, match="does not exist"):
    data.load(helpers.config_values(data_dir=str(tmp_path / "missing")))


def test_normalisation_and_resize():
  images = tf.constant([[[[0]], [[255]]], [[[128]], [[64]]]], tf.uint8)  # [2, 2, 1, 1]
  x = data.preprocess(images, (2, 1, 1))
  np.testing.assert_allclose(x.numpy().ravel(), [-1.0, 1.0, 128 / 127.5 - 1, 64 / 127.5 - 1], atol=1e-6)
  big = data.preprocess(tf.zeros([3, 28, 28, 1], tf.uint8) + 255, (64, 64, 3))
  assert big.shape == (3, 64, 64, 3)
  assert float(tf.reduce_min(big)) >= -1.0 and float(tf.reduce_max(big)) <= 1.0


def test_per_replica_batches_cover_global_batch_without_overlap(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=16, seed=3)
  source = data.load(cfg)
  fn = data.make_dataset_fn(cfg, source, (28, 28, 1))
  # One pipeline feeding 4 replicas: 4 consecutive elements of 4 examples make one global step.
  it = iter(fn(_ctx(replicas=4)))
  step = [next(it) for _ in range(4)]
  for b in step:
    assert b["images"].shape == (4, 28, 28, 1) and b["images"].dtype == tf.float32
    assert b["labels"].shape == (4,) and b["labels"].dtype == tf.int32
    assert -1.0 <= float(tf.reduce_min(b["images"])) and float(tf.reduce_max(b["images"])) <= 1.0
  ids = np.concatenate([_example_ids(b) for b in step])
  assert len(set(ids)) == 16
  # Two workers with 2 replicas each see the same global batch, split without overlap.
  per_worker = []
  for pid in range(2):
    wit = iter(fn(_ctx(num_pipelines=2, pipeline_id=pid, replicas=4)))
    per_worker.append(np.concatenate([_example_ids(next(wit)) for _ in range(2)]))
  assert not set(per_worker[0]) & set(per_worker[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(per_worker)), np.sort(ids))


def test_order_is_a_function_of_seed_and_step(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=8, seed=1)
  source = data.load(cfg)
  full = iter(data.make_dataset_fn(cfg, source, (28, 28, 1))(_ctx()))
  stream = [_example_ids(next(full)) for _ in range(20)]  # 20 steps = 2.5 epochs of 8 batches.
  resumed = iter(data.make_dataset_fn(cfg, source, (28, 28, 1), start_step=13)(_ctx()))
  for step in range(13, 20):
    np.testing.assert_array_equal(_example_ids(next(resumed)), stream[step])
  # Each epoch is a permutation of all examples, and epochs differ.
  np.testing.assert_array_equal(np.sort(np.concatenate(stream[:8])), np.arange(64))
  assert not np.array_equal(np.concatenate(stream[:8]), np.concatenate(stream[8:16]))
  other_seed = helpers.config_values(data_dir=d, batch_size=8, seed=2)
  other = iter(data.make_dataset_fn(other_seed, source, (28, 28, 1))(_ctx()))
  assert not np.array_equal(_example_ids(next(other)), stream[0])


def test_distributed_dataset_on_two_replicas(tmp_path, mirrored2):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=8)
  source = data.load(cfg)
  dist = mirrored2.distribute_datasets_from_function(data.make_dataset_fn(cfg, source, (28, 28, 1)))
  batch = next(iter(dist))
  parts = mirrored2.experimental_local_results(batch["images"])
  assert [p.shape for p in parts] == [(4, 28, 28, 1)] * 2


def test_batch_must_divide_over_replicas(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=6)
  fn = data.make_dataset_fn(cfg, data.load(cfg), (28, 28, 1))
  with pytest.raises(data.DataError, match="divide evenly"):
    fn(_ctx(replicas=4))


def test_idx_files_found_with_or_without_gz(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path / "plain"), num=8, gz=False)
  assert data.find_idx_files(d, "train")[0].endswith("train-images-idx3-ubyte")
  assert data.find_idx_files(str(tmp_path), "train") is None
  assert os.path.basename(data.find_idx_files(helpers.make_idx_dir(str(tmp_path / "gz"), num=8), "test")[1]) == \
      "t10k-labels-idx1-ubyte.gz"


def test_tfds_datasets_by_name():
  """The TFDS path, offline: tfds.testing.mock_data stands in for prepared datasets."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=24):
    mnist = data.load(helpers.config_values(dataset="mnist"))
    assert mnist.images.shape == (24, 28, 28, 1) and mnist.images.dtype == np.uint8
    assert mnist.num_classes == 10 and mnist.labels.dtype == np.int32 and mnist.name.startswith("TFDS mnist")
    cifar = data.load(helpers.config_values(dataset="cifar10"))
    assert cifar.images.shape == (24, 32, 32, 3) and cifar.num_classes == 10
  with pytest.raises(data.DataError, match="Unknown TensorFlow Datasets name"):
    data.load(helpers.config_values(dataset="no_such_dataset_xyz"))
