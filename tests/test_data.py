"""Data pipeline: IDX reading (and its damage), normalisation, per-replica batches, order as a function of (seed,
step). Folders: test_data_folder.py; TFDS: test_data_tfds.py; training on them: test_data_train.py."""

import gzip
import os
import re
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import data
from gan_dist.datasets import images as images_lib
from tests import helpers


def _ctx(num_pipelines=1, pipeline_id=0, replicas=1):
  return tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


def _example_ids(batch):
  """Recovers example indices from the first pixel (written by helpers.make_idx_dir)."""
  return np.round((batch["images"].numpy()[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _assert_labels_are_the_examples(batch):
  """helpers.make_idx_dir labels example i with i % 10: each label is that of the image beside it."""
  np.testing.assert_array_equal(batch["labels"].numpy(), _example_ids(batch) % 10)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_roundtrip(tmp_path, gz):
  d = helpers.make_idx_dir(str(tmp_path), num=12, gz=gz)
  source = data.load_idx(d, "train", crop="center")
  assert source.images.shape == (12, 28, 28, 1) and source.images.dtype == np.uint8
  assert source.labels.tolist() == [i % 10 for i in range(12)]
  assert source.num_classes == 10
  assert data.load_idx(d, "test", crop="center").images.shape == (12, 28, 28, 1)


def test_idx_reader_rejects_bad_files(tmp_path):
  bad = tmp_path / "x-idx3-ubyte"
  bad.write_bytes(b"\x01\x02\x03\x04rest")
  with pytest.raises(data.DataError, match="not an IDX file"):
    data.read_idx(str(bad))
  truncated = tmp_path / "t-idx1-ubyte"
  truncated.write_bytes(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + b"abc")
  with pytest.raises(data.DataError, match="header says"):
    data.read_idx(str(truncated))


def test_filtering_a_filtered_idx_split_indexes_into_it(tmp_path):
  """A subset of a class-filtered split (as evaluation takes one) holds that class's examples, not others."""
  d = helpers.make_idx_dir(str(tmp_path), num=40)
  fives = data.open_source(helpers.config_values(data_dir=d, class_filter=5))
  subset = fives.filtered(np.array([1, 3], np.int64), "two fives")
  assert subset.labels.tolist() == [5, 5]
  np.testing.assert_array_equal(subset.images, fives.images[[1, 3]])


def test_real_mnist(mnist_dir):
  source = data.open_source(helpers.config_values(data_dir=mnist_dir))
  assert source.images.shape == (60000, 28, 28, 1)
  assert np.bincount(source.labels).tolist()[:3] == [5923, 6742, 5958]  # MNIST's published class counts.
  test = data.open_source(helpers.config_values(data_dir=mnist_dir, split="test"))
  assert len(test.images) == 10000


def test_class_filter(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=40)
  source = data.open_source(helpers.config_values(data_dir=d, class_filter=5))
  assert len(source.images) == 4 and set(source.labels.tolist()) == {5}
  assert source.num_classes == 10  # Conditional models still see every class.
  with pytest.raises(data.DataError, match="no examples"):
    data.open_source(helpers.config_values(data_dir=d, class_filter=12))


def test_offline_without_files_is_one_clear_line(tmp_path, monkeypatch):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(data.DataError) as err:
    data.open_source(helpers.config_values(data_dir=str(empty), dataset="mnist"))
  message = str(err.value)
  assert "\n" not in message and "--data_dir" in message and "IDX" in message
  assert "could not be downloaded (GAN_DIST_OFFLINE=1 is set)" in message  # tests/conftest.py: no download tried.
  with pytest.raises(data.DataError, match=r"does not exist$"):
    data.open_source(helpers.config_values(data_dir=str(tmp_path / "missing")))
  # A relative path: from where it was looked for (a workdir's flags.txt keeps it as given).
  monkeypatch.chdir(tmp_path)
  with pytest.raises(data.DataError, match=rf"^--data_dir=../data does not exist \(from {re.escape(str(tmp_path))}\)$"):
    data.open_source(helpers.config_values(data_dir="../data"))


def test_normalisation_and_resize():
  """`images.transform`, what every source's pipeline applies to its decoded images."""
  images = tf.constant([[[[0]], [[255]]], [[[128]], [[64]]]], tf.uint8)  # [2, 2, 1, 1]
  x = images_lib.transform(images, (2, 1, 1), crop="none")
  np.testing.assert_allclose(x.numpy().ravel(), [-1.0, 1.0, 128 / 127.5 - 1, 64 / 127.5 - 1], atol=1e-6)
  big = images_lib.transform(tf.zeros([3, 28, 28, 1], tf.uint8) + 255, (64, 64, 3), crop="center")
  assert big.shape == (3, 64, 64, 3)
  # White stays white: every pixel, edges included, of every (gray-repeated) channel.
  np.testing.assert_array_equal(big.numpy(), np.ones([3, 64, 64, 3], np.float32))


def test_per_replica_batches_cover_global_batch_without_overlap(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=16, seed=3)
  source = data.open_source(cfg)
  fn = data.make_dataset_fn(cfg, source, (28, 28, 1))
  # One pipeline feeding 4 replicas: 4 consecutive elements of 4 examples make one global step.
  it = iter(fn(_ctx(replicas=4)))
  step = [next(it) for _ in range(4)]
  for b in step:
    assert b["images"].shape == (4, 28, 28, 1) and b["images"].dtype == tf.float32
    assert b["labels"].shape == (4,) and b["labels"].dtype == tf.int32
    assert -1.0 <= float(tf.reduce_min(b["images"])) and float(tf.reduce_max(b["images"])) <= 1.0
    _assert_labels_are_the_examples(b)
  ids = np.concatenate([_example_ids(b) for b in step])
  assert len(set(ids)) == 16
  # Two workers with 2 replicas each see the same global batch, split without overlap.
  per_worker = []
  for pid in range(2):
    wit = iter(fn(_ctx(num_pipelines=2, pipeline_id=pid, replicas=4)))
    batches = [next(wit) for _ in range(2)]
    for b in batches:
      _assert_labels_are_the_examples(b)
    per_worker.append(np.concatenate([_example_ids(b) for b in batches]))
  assert not set(per_worker[0]) & set(per_worker[1])
  np.testing.assert_array_equal(np.sort(np.concatenate(per_worker)), np.sort(ids))


def test_order_is_a_function_of_seed_and_step(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=8, seed=1)
  source = data.open_source(cfg)
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
  source = data.open_source(cfg)
  dist = mirrored2.distribute_datasets_from_function(data.make_dataset_fn(cfg, source, (28, 28, 1)))
  batch = next(iter(dist))
  parts = mirrored2.experimental_local_results(batch["images"])
  assert [p.shape for p in parts] == [(4, 28, 28, 1)] * 2


def test_batch_must_divide_over_replicas(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=64)
  cfg = helpers.config_values(data_dir=d, batch_size=6)
  fn = data.make_dataset_fn(cfg, data.open_source(cfg), (28, 28, 1))
  with pytest.raises(data.DataError, match="divide evenly"):
    fn(_ctx(replicas=4))


def test_an_incomplete_idx_folder_is_an_error_naming_the_missing_files(tmp_path):
  """Not a TFDS data dir to download into: one line, at once."""
  d = helpers.make_idx_dir(str(tmp_path / "idx"), num=8)
  os.remove(os.path.join(d, "train-labels-idx1-ubyte.gz"))
  with pytest.raises(data.DataError) as err:
    data.open_source(helpers.config_values(data_dir=d))
  assert str(err.value) == (
      f"--data_dir={d} holds IDX files (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
      "train-images-idx3-ubyte.gz) but not train-labels-idx1-ubyte[.gz] of the train split; copy the missing file(s) "
      "there (MNIST and Fashion-MNIST come as four files)")
  for name in os.listdir(d):
    if name.startswith("t10k"):
      os.remove(os.path.join(d, name))
  os.remove(os.path.join(d, "train-images-idx3-ubyte.gz"))
  helpers.make_idx_dir(str(tmp_path / "full"), num=8)
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
    shutil.copy(os.path.join(tmp_path, "full", name), d)
  assert data.open_source(helpers.config_values(data_dir=d)).num_examples == 8  # The train split alone is enough...
  with pytest.raises(data.DataError, match=r"but not t10k-images-idx3-ubyte\[\.gz\] and t10k-labels-idx1-ubyte\[\.gz\] "
                                           "of the test split"):
    data.open_source(helpers.config_values(data_dir=d), "test")  # ...and the test split is named as missing.


def test_idx_files_found_with_or_without_gz(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path / "plain"), num=8, gz=False)
  assert data.find_idx_files(d, "train")[0].endswith("train-images-idx3-ubyte")
  assert data.find_idx_files(str(tmp_path), "train") is None
  assert os.path.basename(data.find_idx_files(helpers.make_idx_dir(str(tmp_path / "gz"), num=8), "test")[1]) == \
      "t10k-labels-idx1-ubyte.gz"


def test_tfds_datasets_by_name(monkeypatch):
  """The TFDS path, offline: tfds.testing.mock_data stands in for prepared datasets (more in test_data_tfds.py)."""
  with helpers.mock_tfds(monkeypatch, num_examples=24):
    mnist = data.open_source(helpers.config_values(dataset="mnist"))
    assert mnist.num_examples == 24 and mnist.num_classes == 10 and mnist.name.startswith("TFDS mnist")
    batch = next(iter(data.eval_dataset(mnist, (28, 28, 1), batch_size=24)))
    assert batch["images"].shape == (24, 28, 28, 1) and batch["labels"].dtype == tf.int32
  with pytest.raises(data.DataError, match="Unknown TensorFlow Datasets name"):
    data.open_source(helpers.config_values(dataset="no_such_dataset_xyz"))


def _write(path, payload: bytes, gz: bool):
  opener = gzip.open if gz else open
  with opener(path, "wb") as f:
    f.write(payload)


def _idx_header(*shape):
  return b"\0\0\x08" + bytes([len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("damage,match", [
    ("not_gzip", "cannot be read"), ("truncated_gzip", "cannot be read"), ("bad_magic", "not an IDX file"),
    ("short_data", "is truncated"), ("extra_data", "more data than its header"), ("short_header", "is truncated"),
    ("missing", "does not exist")])
def test_damaged_idx_files_are_one_line_errors(tmp_path, damage, match):
  path = str(tmp_path / "train-images-idx3-ubyte.gz")
  good = _idx_header(3, 2, 2) + bytes(12)
  if damage == "not_gzip":
    with open(path, "wb") as f:
      f.write(good)  # Named .gz but not gzipped.
  elif damage == "truncated_gzip":
    _write(path, good * 50, gz=True)
    with open(path, "rb") as f:
      payload = f.read()
    with open(path, "wb") as f:
      f.write(payload[:len(payload) // 2])
  elif damage == "bad_magic":
    _write(path, b"\x01\x02\x08\x03" + bytes(12), gz=True)
  elif damage == "short_data":
    _write(path, _idx_header(3, 2, 2) + bytes(11), gz=True)
  elif damage == "extra_data":
    _write(path, good + b"\0", gz=True)
  elif damage == "short_header":
    _write(path, b"\0\0\x08\x03\0\0", gz=True)
  with pytest.raises(data.DataError, match=match) as error:
    data.read_idx(path)
  assert "\n" not in str(error.value) and "train-images-idx3-ubyte.gz" in str(error.value)


def test_idx_images_and_labels_must_agree(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=12)
  helpers.write_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), np.zeros(11, np.uint8))
  with pytest.raises(data.DataError, match="holds 12 images but .* 11 labels"):
    data.open_source(helpers.config_values(data_dir=d))


def test_num_classes_below_the_labels_present(tmp_path):
  d = helpers.make_idx_dir(str(tmp_path), num=20)
  with pytest.raises(data.DataError, match=r"--num_classes=5 is below the 10 classes") as error:
    data.open_source(helpers.config_values(data_dir=d, num_classes=5))
  assert "\n" not in str(error.value)
  assert data.open_source(helpers.config_values(data_dir=d, num_classes=12)).num_classes == 10


def test_idx_source_holds_one_copy(tmp_path):
  """The images move into one TensorFlow tensor on first use; pipelines share it."""
  d = helpers.make_idx_dir(str(tmp_path), num=32)
  cfg = helpers.config_values(data_dir=d, batch_size=8)
  source = data.open_source(cfg)
  first = next(iter(data.make_dataset_fn(cfg, source, (28, 28, 1))(_ctx())))
  tensor = source._images_tensor  # pylint: disable=protected-access
  assert tensor is not None and source._images is None  # pylint: disable=protected-access
  next(iter(data.eval_dataset(source, (28, 28, 1), 8)))
  assert source._images_tensor is tensor  # pylint: disable=protected-access
  assert source.images.shape == (32, 28, 28, 1) and first["images"].shape == (8, 28, 28, 1)
