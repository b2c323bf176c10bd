"""TensorFlow Datasets sources, offline: random access to ArrayRecord (mock_data's data-source mode), and the one-time
conversion of a dataset prepared as TFRecord, checked record by record against TFDS's own sequential reader."""

import os
import re
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_dist import data
from gan_dist import errors
from gan_dist.datasets import tfds_source
from tests import helpers


class GanDistTestImages(tfds.core.GeneratorBasedBuilder):
  """37 small RGB images of three sizes and three classes (registered as "gan_dist_test_images").

  TFDS finds the code of a builder like this one (in a package: tests) through importlib_resources when it prepares
  it, as for its own datasets: this is the test of that dependency of pyproject.toml (without it, preparing failed
  with ModuleNotFoundError on Python 3.11 and later)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(30), "test": self._generate_examples(7)}

  def _generate_examples(self, num):
    rng = np.random.RandomState(num)
    for i in range(num):
      yield i, {"image": rng.randint(0, 256, (8 + i % 3, 10, 3)).astype(np.uint8), "label": (i * 7) % 3}


def _ctx():
  return tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=1)


def test_mock_cifar10_by_random_access(monkeypatch):
  # mock_data also patches builder.as_data_source: with MockPolicy.USE_CODE (no metadata files needed) it serves an
  # ArrayRecord data source of generated, serialized examples, read here exactly as a prepared dataset's.
  cfg = helpers.config_values(dataset="cifar10", batch_size=8, random_flip=True)
  with helpers.mock_tfds(monkeypatch, num_examples=24):
    source = data.open_source(cfg)
    assert source.num_examples == 24 and source.num_classes == 10 and source.name.startswith("TFDS cifar10")
    # The builder's ClassLabel(num_classes=10) names its classes "0".."9" until a prepared dataset's metadata names
    # them (the mock has none): no names.
    assert source.class_names == []
    batches = list(data.make_dataset_fn(cfg, source, (32, 32, 3))(_ctx()).take(4))
    evaluated = list(data.eval_dataset(source, (32, 32, 1), batch_size=10))
  for batch in batches:
    assert batch["images"].shape == (8, 32, 32, 3) and batch["images"].dtype == tf.float32
    assert batch["labels"].dtype == tf.int32 and 0 <= int(tf.reduce_min(batch["labels"]))
    assert int(tf.reduce_max(batch["labels"])) < 10
    assert -1.0 <= float(tf.reduce_min(batch["images"])) and float(tf.reduce_max(batch["images"])) <= 1.0
  assert [len(b["labels"]) for b in evaluated] == [10, 10, 4] and evaluated[0]["images"].shape[-1] == 1
  # An epoch (3 steps of 8) is a permutation of the 24 examples: compare the images' checksums.
  sums = sorted(float(x) for b in batches[:3] for x in tf.reduce_sum(b["images"], axis=[1, 2, 3]))
  assert len(set(np.round(sums, 3))) == 24


@pytest.fixture(scope="module")
def tfrecord_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tfds"))
  GanDistTestImages(data_dir=root, file_format="tfrecord").download_and_prepare()
  return root


def _reference(root, split):
  """(images uint8, labels) in stored order, from TFDS's sequential TFRecord reader."""
  dataset = tfds.builder("gan_dist_test_images", data_dir=root).as_dataset(split=split, shuffle_files=False)
  examples = list(tfds.as_numpy(dataset))
  return [e["image"] for e in examples], np.array([e["label"] for e in examples])


def test_a_tfrecord_dataset_is_converted_once_in_the_same_order(tfrecord_dir, tmp_path):
  cache = str(tmp_path / "cache")
  cfg = helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir, data_cache_dir=cache,
                              crop="none")
  source = data.open_source(cfg)
  converted = os.path.join(cache, "gan_dist_test_images", "1.0.0")
  assert sorted(os.listdir(converted)) == [
      "dataset_info.json", "features.json", "gan_dist_test_images-test.array_record-00000-of-00001",
      "gan_dist_test_images-train.array_record-00000-of-00001", "label.labels.txt"]
  assert source.num_examples == 30 and source.num_classes == 3 and converted in source.name
  images, labels = _reference(tfrecord_dir, "train")
  got = next(iter(data.eval_dataset(source, (10, 10, 3), batch_size=30)))
  np.testing.assert_array_equal(got["labels"].numpy(), labels)
  for i in (0, 1, 2, 29):  # Unresized (10x10, no crop) rows of each size: same pixels, same order.
    if images[i].shape[0] == 10:
      np.testing.assert_array_equal(np.round((got["images"][i].numpy() + 1) * 127.5), images[i])
  # Opened again: the converted copy is read, not rewritten; other splits come from it too.
  stamp = os.path.getmtime(os.path.join(converted, "dataset_info.json"))
  test = data.open_source(cfg, split="test")
  assert test.num_examples == 7 and os.path.getmtime(os.path.join(converted, "dataset_info.json")) == stamp


def test_a_shard_that_does_not_convert_whole_leaves_no_file_and_the_next_run_converts_it(tfrecord_dir, tmp_path,
                                                                                        monkeypatch):
  cache = str(tmp_path / "cache")
  cfg = helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir, data_cache_dir=cache)
  write = tfds_source._write_array_record  # pylint: disable=protected-access
  monkeypatch.setattr(tfds_source, "_write_array_record", lambda records, path: write(records, path) - 1)
  with pytest.raises(data.DataError, match=r"holds 29 records but its dataset_info\.json says 30; prepare "
                                           r"--dataset=gan_dist_test_images again"):
    data.open_source(cfg)
  converted = os.path.join(cache, "gan_dist_test_images", "1.0.0")
  assert os.listdir(converted) == []  # No half-written shard under its name or a temporary one, no dataset_info.
  monkeypatch.setattr(tfds_source, "_write_array_record", write)
  assert data.open_source(cfg).num_examples == 30


def test_default_conversion_dir_and_class_filter(tfrecord_dir):
  cfg = helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir, class_filter=2)
  source = data.open_source(cfg)
  assert os.path.isdir(os.path.join(tfrecord_dir, "gan_dist_array_record", "gan_dist_test_images", "1.0.0"))
  _, labels = _reference(tfrecord_dir, "train")
  assert source.num_examples == int((labels == 2).sum()) and source.num_classes == 3
  assert source.class_names == ["a", "b", "c"]  # The ClassLabel's names, all of them also after --class_filter.
  got = next(iter(data.eval_dataset(source, (8, 8, 3), batch_size=30)))
  assert set(got["labels"].numpy().tolist()) == {2}


def test_unknown_names_and_splits_are_one_line_errors(tfrecord_dir, tmp_path):
  with pytest.raises(data.DataError, match="Unknown TensorFlow Datasets name") as error:
    data.open_source(helpers.config_values(dataset="no_such_dataset_xyz"))
  assert "\n" not in str(error.value)
  with pytest.raises(data.DataError, match="--split=validation.*has the splits") as error:
    data.open_source(helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir,
                                           split="validation"))
  assert "\n" not in str(error.value)
  # Slices that cannot work are refused before the TFRecord dataset is converted (minutes on a large one).
  cache = tmp_path / "cache"
  for split, why in (("train[:abc]", r"Error parsing split 'train\[:abc\]'"),
                     ("train[:1000]", r"Requested slice \[:1000\] incompatible with 30 examples"),
                     ("train[20:10]", "it selects no examples"), ("train[30:]", "it selects no examples")):
    with pytest.raises(data.DataError, match=rf"^--split={re.escape(split)} of --dataset=gan_dist_test_images: "
                                             rf"{why}") as error:
      data.open_source(helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir, split=split,
                                             data_cache_dir=str(cache)))
    assert "\n" not in str(error.value)
  assert not cache.exists()
  assert data.open_source(helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir,
                                                split="train[-5:]", data_cache_dir=str(cache))).num_examples == 5
  # A --data_cache_dir under a file: one line, before converting.
  (tmp_path / "a_file").write_text("mine")
  with pytest.raises(errors.UserError, match=rf"^{tmp_path}/a_file/gan_dist_test_images/1\.0\.0 \(where "
                                             r"--dataset=gan_dist_test_images is converted; --data_cache_dir chooses\)"
                                             rf": {tmp_path}/a_file is a file, not a directory$"):
    data.open_source(helpers.config_values(dataset="gan_dist_test_images", data_dir=tfrecord_dir,
                                           data_cache_dir=str(tmp_path / "a_file")))


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_download_that_cannot_work_is_refused_before_it_starts(tmp_path, monkeypatch):
  """Offline, TFDS's download retries take ~3.5 minutes to fail. GAN_DIST_OFFLINE (set for the whole suite by
  tests/conftest.py) or a refused connection to TFDS's host ends the run at once, with no download started; files
  already in downloads/, or a proxy, still get TFDS's try (failing here by the stand-in below)."""
  attempts = []

  def download_and_prepare(builder, **kwargs):
    attempts.append((builder.name, kwargs))
    raise ConnectionError("stand-in for a failed download")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
  root = tmp_path / "tfds"
  root.mkdir()
  cfg = helpers.config_values(dataset="mnist", data_dir=str(root))
  assert os.environ["GAN_DIST_OFFLINE"] == "1"
  with pytest.raises(data.DataError, match=r"could not be downloaded \(GAN_DIST_OFFLINE=1 is set\)\. Offline"):
    data.open_source(cfg)
  monkeypatch.delenv("GAN_DIST_OFFLINE")
  for name in list(os.environ):
    if name.lower().endswith("_proxy"):
      monkeypatch.delenv(name)
  monkeypatch.setenv("no_proxy", "localhost")  # Not a proxy: the connection is still tried.
  monkeypatch.setattr(tfds_source, "DOWNLOAD_HOST", ("127.0.0.1", _closed_port()))
  with pytest.raises(data.DataError, match=r"downloaded \(no connection to 127\.0\.0\.1: .*refused\)") as error:
    data.open_source(cfg)
  assert "\n" not in str(error.value)
  assert not attempts
  monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
  with pytest.raises(data.DataError, match=r"downloaded \(ConnectionError\)"):
    data.open_source(cfg)
  monkeypatch.delenv("https_proxy")
  monkeypatch.setenv("GAN_DIST_OFFLINE", "1")
  (root / "downloads").mkdir()
  (root / "downloads" / "some_download.gz").write_bytes(b"x")
  with pytest.raises(data.DataError, match=r"downloaded \(ConnectionError\)"):
    data.open_source(cfg)
  assert attempts == [("mnist", {"file_format": "array_record"})] * 2
  # A dataset without images is refused from its features, before any download is tried.
  with pytest.raises(data.DataError, match=r"^--dataset=imdb_reviews has no image feature \(features: text, label\)"):
    data.open_source(helpers.config_values(dataset="imdb_reviews", data_dir=str(root)))
  assert len(attempts) == 2
