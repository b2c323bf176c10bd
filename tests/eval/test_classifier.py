"""The feature network: reproducible, cached per dataset and image shape, meaningful features on real MNIST."""

import dataclasses

import numpy as np
import pytest

from gan_dist import models
from gan_dist import sample as sample_lib
from gan_dist.eval import class_accuracy
from gan_dist.eval import classifier
from gan_dist.eval import metrics
from tests import helpers


def test_network_shapes_for_each_image_size():
  for shape, features_at in (((28, 28, 1), (7, 7, 64)), ((32, 32, 3), (8, 8, 64)), ((64, 64, 3), (8, 8, 128))):
    model = classifier.build(shape, 10)
    features, logits = model(np.zeros((2, *shape), np.float32))
    assert features.shape == (2, classifier.FEATURE_DIM) and logits.shape == (2, 10)
    assert model.get_layer("features").input.shape[1:] == (np.prod(features_at),)


def test_training_is_reproducible_cached_and_keyed_by_shape(tmp_path):
  cfg = helpers.config(tmp_path, data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=64),
                       eval_cache_dir=str(tmp_path / "cache"))
  first = classifier.load_or_train(cfg, (28, 28, 1))
  again = classifier.train_net(cfg, (28, 28, 1))
  assert again.checksum == first.checksum and again.test_accuracy == first.test_accuracy
  loaded = classifier.load_or_train(cfg, (28, 28, 1))  # From the cache: same weights.
  assert loaded.checksum == first.checksum and loaded.info == first.info
  images = np.random.RandomState(0).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
  np.testing.assert_array_equal(loaded.model(images)[1], first.model(images)[1])
  other_shape = classifier.load_or_train(cfg, (32, 32, 3))
  assert other_shape.key != first.key and "28x28x1" in first.key and "32x32x3" in other_shape.key
  # Another dataset under the same name and path gets another key.
  helpers.make_idx_dir(str(tmp_path / "idx"), num=64, seed=1)
  assert classifier.load_or_train(cfg, (28, 28, 1)).key != first.key


def test_cache_entry_with_wrong_weights_is_refused(tmp_path):
  cfg = helpers.config(tmp_path, data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=32),
                       eval_cache_dir=str(tmp_path / "cache"))
  net = classifier.load_or_train(cfg, (28, 28, 1))
  directory = f"{cfg.eval_cache_dir}/classifier/{net.key}"
  classifier.save(dataclasses.replace(net, model=classifier.build((28, 28, 1), 10, seed=5)), directory)
  with pytest.raises(ValueError, match="does not match its info.json"):
    classifier.load(directory)


@pytest.fixture(scope="module")
def mnist_features(mnist_dir):
  """A network trained 1 epoch on 3,000 MNIST training images; its accuracy, features and logits on 3,000 test
  images (the first 3,000 of the test split: those its test accuracy is measured on), and features of noise."""
  cfg = helpers.config_values(data_dir=mnist_dir)
  train, test = classifier.labelled_splits(cfg)
  model, accuracy = classifier.train(train, test, (28, 28, 1), epochs=1, max_examples=3000)
  features, logits, labels = classifier.predict(model, test, (28, 28, 1), num=3000)
  noise = np.random.RandomState(0).uniform(-1, 1, (500, 28, 28, 1)).astype(np.float32)
  noise_features, _ = model(noise)
  return dict(accuracy=accuracy, features=features, logits=logits, labels=labels, noise=np.asarray(noise_features))


def test_fcd_and_kid_of_test_images_are_about_zero_against_themselves_and_large_against_noise(mnist_features):
  real = mnist_features["features"][:1000]
  first, second = real[:500], real[500:]
  assert metrics.fcd(real, real) == pytest.approx(0.0, abs=1e-3)
  within = metrics.fcd(first, second)
  against_noise = metrics.fcd(first, mnist_features["noise"])
  assert against_noise > 20 * within, (within, against_noise)
  kid_within, kid_std = metrics.kid(first, second, num_subsets=20, subset_size=250)
  kid_noise, _ = metrics.kid(first, mnist_features["noise"], num_subsets=20, subset_size=250)
  assert abs(kid_within) < 3 * kid_std + 0.01 * kid_noise and kid_noise > 0.0
  assert metrics.precision_recall(first, mnist_features["noise"]) == (0.0, 0.0)


def test_label_accuracy_of_real_test_images_is_the_classifier_accuracy(mnist_features):
  overall, per_class = metrics.label_accuracy(mnist_features["logits"], mnist_features["labels"], 10)
  assert overall == mnist_features["accuracy"] > 0.7
  assert per_class.shape == (10,) and (per_class > 0.3).all()


def test_per_class_accuracy_of_an_untrained_cgan():
  model = classifier.build((28, 28, 1), 10)  # Untrained: only the bookkeeping is under test.
  gan = models.build(helpers.config_values(arch="cgan_mlp"), 10)
  generate_fn = sample_lib.make_generate_fn(gan.generator, gan)
  accuracy = class_accuracy.per_class_accuracy(model, generate_fn, gan, num_per_class=3, seed=0)
  assert accuracy.shape == (10,) and ((0.0 <= accuracy) & (accuracy <= 1.0)).all()
  assert np.allclose(accuracy * 3, np.round(accuracy * 3))  # Fractions of 3 samples.
