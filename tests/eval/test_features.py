"""The feature network: reproducible, cached per dataset and image shape, fixed splits, meaningful on real MNIST."""

import dataclasses
import os
import shutil

import numpy as np
import pytest

from gan_dist import data
from gan_dist import errors
from gan_dist import files
from gan_dist.eval import features
from gan_dist.eval import metrics
from tests import helpers


def _idx_config(tmp_path, num=64, **overrides):
  return helpers.config(tmp_path, data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=num),
                        eval_cache_dir=str(tmp_path / "cache"), **overrides)


def _example_indices(source, shape=(28, 28, 1)) -> np.ndarray:
  """Which fixture examples `source` holds: make_idx_dir writes each one's index into its first pixel."""
  images = np.concatenate([b["images"].numpy() for b in data.eval_dataset(source, shape, 500)])
  return np.round((images[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _leftovers(directory):
  return [os.path.join(r, n) for r, _, names in os.walk(directory) for n in names if n.endswith(files.TMP_SUFFIX)]


def test_network_shapes_for_each_image_size():
  for shape, features_at in (((28, 28, 1), (7, 7, 64)), ((32, 32, 3), (8, 8, 64)), ((64, 64, 3), (8, 8, 128))):
    model = features.build(shape, 10)
    feats, logits = model(np.zeros((2, *shape), np.float32))
    assert feats.shape == (2, features.FEATURE_DIM) and logits.shape == (2, 10)
    assert model.get_layer("features").input.shape[1:] == (np.prod(features_at),)
    assert model.dtype_policy.name == "float32"


@pytest.mark.slow
def test_training_is_reproducible_cached_and_keyed_by_shape(tmp_path, monkeypatch):
  cfg = _idx_config(tmp_path)
  first = features.load_or_train(cfg, (28, 28, 1))
  directory = features.net_dir(cfg, first.key)
  assert sorted(os.listdir(directory)) == ["info.json", "weights.npz"] and not _leftovers(cfg.eval_cache_dir)
  assert 0.0 <= first.test_accuracy <= 1.0 and len(first.checksum) == 16
  again = features.train_net(cfg, (28, 28, 1))
  assert again.checksum == first.checksum and again.test_accuracy == first.test_accuracy
  with monkeypatch.context() as patch:  # From the cache: nothing is trained.
    patch.setattr(features, "train", lambda *a, **k: pytest.fail("trained although cached"))
    loaded = features.load_or_train(cfg, (28, 28, 1))
  assert loaded.checksum == first.checksum and loaded.info == first.info
  images = np.random.RandomState(0).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
  np.testing.assert_array_equal(loaded.model(images)[1], first.model(images)[1])
  np.testing.assert_allclose(features.predict_images(loaded.model, images)[1], first.model(images)[1], rtol=1e-6)
  other_shape = features.load_or_train(cfg, (32, 32, 3), steps=2)  # Colour: the contrastive procedure.
  assert other_shape.key != first.key and "28x28x1" in first.key and "32x32x3" in other_shape.key
  assert first.key.endswith("-v1") and other_shape.key.endswith("-contrastive-v1-steps2")
  # Another data set under the same name and path gets another key.
  helpers.make_idx_dir(str(tmp_path / "idx"), num=64, seed=1)
  assert features.load_or_train(cfg, (28, 28, 1)).key != first.key


def test_a_network_trained_on_fewer_examples_has_its_own_key(tmp_path):
  cfg = _idx_config(tmp_path)
  net = features.load_or_train(cfg, (28, 28, 1), max_examples=32, write=False)
  assert net.key.endswith("-first32") and net.info["test_examples"] == 32
  assert not os.path.exists(cfg.eval_cache_dir)  # write=False: a worker other than the chief writes nothing.


def test_cache_entry_with_wrong_weights_is_refused(tmp_path):
  cfg = _idx_config(tmp_path, num=32)
  net = features.load_or_train(cfg, (28, 28, 1))
  directory = features.net_dir(cfg, net.key)
  features.save(dataclasses.replace(net, model=features.build((28, 28, 1), 10, seed=5)), directory)
  with pytest.raises(errors.UserError, match="does not match its info.json"):
    features.load(directory)
  os.remove(f"{directory}/info.json")  # Incomplete entry: not there.
  assert features.load(directory) is None


def test_data_hash_follows_the_content_not_the_path(tmp_path):
  cfg = _idx_config(tmp_path)
  train, _ = features.splits(cfg)
  moved = shutil.copytree(cfg.data_dir, str(tmp_path / "elsewhere"))
  moved_train, _ = features.splits(cfg.replace(data_dir=moved))
  assert features.data_hash(moved_train) == features.data_hash(train)
  assert features.cache_key("mnist", (28, 28, 1), moved_train) == features.cache_key("mnist", (28, 28, 1), train)
  other = helpers.make_idx_dir(str(tmp_path / "other"), num=64, seed=3)
  assert features.data_hash(features.splits(cfg.replace(data_dir=other))[0]) != features.data_hash(train)
  assert features.data_hash(features.spread_subset(train, 10)) != features.data_hash(train)


def test_spread_subset_is_a_fixed_spread_choice_in_order(tmp_path):
  train, _ = features.splits(_idx_config(tmp_path))
  subset = features.spread_subset(train, 10, salt=1)
  indices = _example_indices(subset)
  assert subset.num_examples == 10 and list(indices) == sorted(set(indices))
  assert indices.max() - indices.min() > 32  # Spread over the split, not its first examples.
  np.testing.assert_array_equal(_example_indices(features.spread_subset(train, 10, salt=1)), indices)
  assert list(_example_indices(features.spread_subset(train, 10, salt=2))) != list(indices)
  assert features.spread_subset(train, 64) is train and features.spread_subset(train, None) is train


def test_class_filter_restricts_the_statistics_splits_only(tmp_path):
  cfg = _idx_config(tmp_path, class_filter=3)
  train, test = features.splits(cfg, apply_class_filter=True)
  assert set(train.example_labels()) == set(test.example_labels()) == {3}
  assert train.num_classes == 10  # The network still learns every class.
  full_train, _ = features.splits(cfg)
  assert full_train.num_examples == 64


def test_idx_files_of_the_train_split_alone_hold_out_a_tenth_as_the_test_split(tmp_path):
  cfg = _idx_config(tmp_path)
  for name in os.listdir(cfg.data_dir):
    if name.startswith("t10k"):
      os.remove(os.path.join(cfg.data_dir, name))
  train, test = features.splits(cfg)
  assert (train.num_examples, test.num_examples) == (58, 6)  # No TFDS download tried for the missing split.


def test_a_folder_holds_out_a_fixed_tenth_as_its_test_split(tmp_path):
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=40, bad=())
  cfg = helpers.config(tmp_path, dataset="folder", data_dir=folder["root"])
  train, test = features.splits(cfg)
  paths = lambda s: [s.path(i) for i in range(s.num_examples)]  # pylint: disable=unnecessary-lambda-assignment
  assert (train.num_examples, test.num_examples) == (36, 4)
  assert not set(paths(train)) & set(paths(test)) and paths(train) == sorted(paths(train))
  again_train, again_test = features.splits(cfg)
  assert paths(again_test) == paths(test) and features.data_hash(again_train) == features.data_hash(train)
  assert features.cache_key("folder", (32, 32, 3), train).startswith("folder-32x32x3-")
  # The same labels and count in another folder: another data set, another hash.
  other = helpers.make_image_folder(str(tmp_path / "other"), num=40, bad=())
  other_train, _ = features.splits(cfg.replace(data_dir=other["root"]))
  assert features.data_hash(other_train) != features.data_hash(train)


# Keras' warnings as errors: unlabelled, the logits are left out of the update (no "Gradients do not exist" warning).
@pytest.mark.filterwarnings("error::UserWarning")
def test_unlabelled_or_colour_data_gets_a_contrastive_network_and_greyscale_labels_a_classifier(tmp_path):
  assert features.kind((28, 28, 1), 10) == "supervised"
  assert features.kind((28, 28, 1), 0) == features.kind((32, 32, 3), 10) == "contrastive"
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=12, classes=(), bad=())
  cfg = helpers.config(tmp_path, dataset="folder", data_dir=folder["root"], eval_cache_dir=str(tmp_path / "cache"))
  net = features.load_or_train(cfg, (32, 32, 3), steps=2)
  assert net.key.endswith("-contrastive-v1-steps2") and net.num_classes == 1 and np.isnan(net.test_accuracy)
  assert net.info["procedure"]["kind"] == "contrastive" and net.info["procedure"]["steps"] == 2
  assert net.info["test_accuracy"] is None and 0.0 <= net.info["view_match_accuracy"] <= 1.0
  feats, logits = features.predict_images(net.model, np.zeros((3, 32, 32, 3), np.float32))
  assert feats.shape == (3, features.FEATURE_DIM) and logits.shape == (3, 1)
  again = features.load(features.net_dir(cfg, net.key))  # Cached, info.json's null accuracy read back as NaN.
  assert again.checksum == net.checksum and np.isnan(again.test_accuracy)
  single = helpers.make_image_folder(str(tmp_path / "single"), num=1, classes=(), bad=())
  with pytest.raises(errors.UserError, match="too few to train a feature network on"):
    features.training_splits(cfg.replace(data_dir=single["root"]))


def test_cache_root_expands_the_home_directory():
  cfg = helpers.config_values(eval_cache_dir="~/gan_cache/")
  assert features.cache_root(cfg) == os.path.expanduser("~/gan_cache/")
  assert features.net_dir(helpers.config_values(eval_cache_dir="gs://b/c/"), "k") == "gs://b/c/classifier/k"


@pytest.fixture(scope="module")
def mnist_features(mnist_dir):
  """A network trained 1 epoch on 3,000 MNIST training images; its accuracy, features and logits on 3,000 test
  images (the first 3,000 of the test split: those its test accuracy is measured on), and those of noise."""
  cfg = helpers.config_values(data_dir=mnist_dir)
  train, test = features.training_splits(cfg)
  model, accuracy = features.train(train, test, (28, 28, 1), epochs=1, max_examples=3000)
  feats, logits, labels = features.predict(model, test, (28, 28, 1), num=3000)
  noise = np.random.RandomState(0).uniform(-1, 1, (500, 28, 28, 1)).astype(np.float32)
  noise_features, noise_logits = features.predict_images(model, noise)
  return dict(accuracy=accuracy, features=feats, logits=logits, labels=labels, noise=noise_features,
              noise_logits=noise_logits)


def _scores(reference, feats, logits):
  """The full metrics of `metrics.Reference.compare`, with KID on 20 subsets of 250 (fast, and a non-zero spread)."""
  kid, kid_std = metrics.kid(reference, feats, num_subsets=20, subset_size=250)
  precision, recall = metrics.precision_recall(reference, feats)
  return dict(fcd=metrics.fcd(reference, feats), kid=kid, kid_std=kid_std, precision=precision, recall=recall,
              classifier_score=metrics.classifier_score(logits))


def test_real_test_images_score_near_the_floor_and_noise_far_from_it(mnist_features):
  real, logits = mnist_features["features"], mnist_features["logits"]
  reference = real[:500]  # As many as the noise images.
  floor = _scores(reference, real[500:1000], logits[500:1000])
  noise = _scores(reference, mnist_features["noise"], mnist_features["noise_logits"])
  assert metrics.fcd(reference, reference) == pytest.approx(0.0, abs=1e-3)
  for found in (floor, noise):
    assert found["fcd"] >= 0.0 and found["kid_std"] > 0.0
    assert 0.0 <= found["precision"] <= 1.0 and 0.0 <= found["recall"] <= 1.0
    assert 1.0 <= found["classifier_score"] <= 10.0
  assert noise["fcd"] > 20 * floor["fcd"], (floor, noise)
  assert abs(floor["kid"]) < 3 * floor["kid_std"] and noise["kid"] > 10 * (floor["kid_std"] + abs(floor["kid"]))
  assert floor["precision"] > 0.5 and floor["recall"] > 0.5 and noise["precision"] == noise["recall"] == 0.0
  # Real digits are told apart (this briefly trained network is still unsure: about 2.5 of 10); noise is not.
  assert floor["classifier_score"] > 2.0 and noise["classifier_score"] < 1.5, (floor, noise)


def test_label_accuracy_of_real_test_images_is_the_classifier_accuracy(mnist_features):
  overall, per_class = metrics.label_accuracy(mnist_features["logits"], mnist_features["labels"], 10)
  assert overall == mnist_features["accuracy"] > 0.7
  assert per_class.shape == (10,) and (per_class > 0.3).all()
