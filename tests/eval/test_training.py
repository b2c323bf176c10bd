"""The in-training Evaluator: floors, topology independence (1 vs 2 replicas), noise indexing, Inception path."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import errors
from gan_dist import models
from gan_dist import plots
from gan_dist import train
from gan_dist.eval import inception
from gan_dist.eval import training
from tests import helpers

KEYS = {"fcd", "kid", "kid_std", "classifier_score", "precision", "recall"}


def _setup(tmp_path, strategy, arch="cgan_mlp", **overrides):
  cfg = helpers.config(tmp_path, arch=arch, data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=64),
                       eval_cache_dir=str(tmp_path / "cache"), num_classes=10, **overrides)
  keras.utils.set_random_seed(0)  # The same generator weights on every strategy.
  with strategy.scope():
    gan = models.build(cfg, 10)
  return cfg, gan


def test_one_and_two_replicas_give_the_same_metrics(tmp_path, mirrored2):
  one = tf.distribute.OneDeviceStrategy("/cpu:0")
  results = []
  for strategy in (one, mirrored2):
    # eval_num=45 does not divide over 2 replicas: the padding must not change which samples are scored.
    cfg, gan = _setup(tmp_path, strategy, eval_num=45)
    evaluator = training.Evaluator(cfg, strategy, gan)
    results.append((evaluator(gan.generator, step=0), evaluator.floors))
  (metrics_1, floors_1), (metrics_2, floors_2) = results
  assert set(metrics_1) == KEYS | {"label_accuracy"} | {f"label_accuracy/{k}" for k in range(10)}
  assert all(isinstance(v, float) for v in metrics_1.values())
  assert floors_1 == floors_2
  for name, value in metrics_1.items():
    assert metrics_2[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_floor_label_accuracy_is_the_classifier_test_accuracy(tmp_path):
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, eval_num=64)  # The whole test split of the fixture.
  evaluator = training.Evaluator(cfg, strategy, gan)
  assert evaluator.floors["label_accuracy"] == evaluator.feature_net.test_accuracy
  assert evaluator.floors["fcd"] == pytest.approx(0.0, abs=1e-6)  # The fixture's test split is its train split.
  assert evaluator.floors["precision"] == evaluator.floors["recall"] == 1.0
  # A second evaluator reads the network and the real features from the cache.
  again = training.Evaluator(cfg, strategy, gan)
  assert again.feature_net.checksum == evaluator.feature_net.checksum and again.floors == evaluator.floors


def test_noise_of_a_sample_depends_on_its_index_only(tmp_path):
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, arch="mlp", eval_num=10)
  evaluator = training.Evaluator(cfg, strategy, gan)
  noise_10, labels = evaluator.sample_inputs(10)
  noise_500, _ = evaluator.sample_inputs(500)
  np.testing.assert_array_equal(noise_10, noise_500[:10])
  assert set(evaluator(gan.generator)) == KEYS  # Unconditional: no label accuracy.


def test_inception_weights_from_a_file_give_fid_and_inception_score(tmp_path):
  weights = str(tmp_path / "inception_random.weights.h5")
  keras.utils.set_random_seed(1)
  keras.applications.InceptionV3(include_top=True, weights=None, classifier_activation=None).save_weights(weights)
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, arch="mlp", eval_num=6, inception_weights=weights)
  evaluator = training.Evaluator(cfg, strategy, gan)
  metrics = evaluator(gan.generator)
  assert {"fid", "inception_score"} <= set(metrics) and {"fid", "inception_score"} <= set(evaluator.floors)
  assert np.isfinite(metrics["fid"]) and metrics["fid"] >= 0.0
  assert 1.0 <= metrics["inception_score"] <= 1000.0
  bad = tmp_path / "not_inception.weights.h5"
  bad.write_bytes(b"not a weights file")
  with pytest.raises(ValueError, match="is not a Keras InceptionV3 weights file"):
    inception.build(str(bad), (28, 28, 1))
  with pytest.raises(errors.UserError, match="does not exist"):
    inception.build(str(tmp_path / "missing.h5"), (28, 28, 1))


def test_training_with_eval_every_logs_metrics_and_keeps_the_best_checkpoint(tmp_path, mirrored2):
  cfg = helpers.config(tmp_path, arch="cgan_mlp", data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=64),
                       eval_cache_dir=str(tmp_path / "cache"), eval_num=40, eval_every=2, train_steps=4,
                       checkpoint_every=4, summary_every=2)
  train.run(cfg, mirrored2)
  scalars = plots.read_scalars(f"{cfg.workdir}/tensorboard")
  assert sorted(step for step, _ in scalars["eval/fcd"]) == [2, 4]
  assert "eval/label_accuracy/9" in scalars and "eval_floor/fcd" in scalars and "time/eval" in scalars
  best = checkpoint_lib.read_best(cfg.workdir)
  fcd = dict(scalars["eval/fcd"])
  assert best["metric"] == "fcd" and best["value"] == pytest.approx(min(fcd.values()), rel=1e-5)
  assert fcd[best["step"]] == pytest.approx(best["value"], rel=1e-5)
  assert tf.io.gfile.exists(best["checkpoint"] + ".index")
