"""The Evaluator: metric ranges, floors, cached real features, topology independence (1 vs 2 replicas), noise
indexing, the Inception path, and its use by the trainer (--eval_every, best checkpoint)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import figures
from gan_dist import files
from gan_dist import models
from gan_dist import sampling
from gan_dist import train
from gan_dist import workdir as workdir_lib
from gan_dist.eval import evaluator as evaluator_lib
from gan_dist.eval import features
from gan_dist.eval import inception
from gan_dist.eval import metrics as metrics_lib
from tests import helpers

KEYS = {"fcd", "kid", "kid_std", "classifier_score", "precision", "recall"}
LABEL_KEYS = {"label_accuracy"} | {f"label_accuracy/{k}" for k in range(10)}


def _setup(tmp_path, strategy, arch="cgan_mlp", **overrides):
  cfg = helpers.config(tmp_path, arch=arch, data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=64),
                       eval_cache_dir=str(tmp_path / "cache"), num_classes=10, **overrides)
  keras.utils.set_random_seed(0)  # The same generator weights on every strategy.
  with strategy.scope():
    gan = models.build(cfg, 10)
  return cfg, gan


def _check_ranges(found, num_classes=10):
  assert all(isinstance(v, float) for v in found.values())
  assert found["fcd"] >= 0.0 and found["kid_std"] >= 0.0 and np.isfinite(found["kid"])
  assert 0.0 <= found["precision"] <= 1.0 and 0.0 <= found["recall"] <= 1.0
  assert 1.0 - 1e-9 <= found["classifier_score"] <= num_classes + 1e-9
  for name, value in found.items():
    if name.startswith("label_accuracy"):
      assert 0.0 <= value <= 1.0, name


@pytest.mark.slow
def test_one_and_two_replicas_give_the_same_metrics(tmp_path, mirrored2):
  one = tf.distribute.OneDeviceStrategy("/cpu:0")
  results = []
  for strategy in (one, mirrored2):
    # eval_num=45 does not divide over 2 replicas: the padding must not change which samples are scored.
    cfg, gan = _setup(tmp_path, strategy, eval_num=45)
    evaluator = evaluator_lib.Evaluator(cfg, strategy, gan)
    results.append((evaluator(gan.generator, step=0), evaluator.floors))
  (metrics_1, floors_1), (metrics_2, floors_2) = results
  assert set(metrics_1) == KEYS | LABEL_KEYS and set(floors_1) == KEYS | LABEL_KEYS
  _check_ranges(metrics_1)
  _check_ranges(floors_1)
  assert floors_1 == floors_2
  for name, value in metrics_1.items():
    assert metrics_2[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
  # An untrained generator is far from real images: further than real test images are.
  assert metrics_1["fcd"] > 2 * floors_1["fcd"]


def test_floors_are_real_test_images_and_real_features_are_cached(tmp_path, monkeypatch):
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, eval_num=64)  # The whole test split of the fixture.
  evaluator = evaluator_lib.Evaluator(cfg, strategy, gan)
  assert evaluator.floors["label_accuracy"] == evaluator.feature_net.test_accuracy
  assert evaluator.floors["fcd"] == pytest.approx(0.0, abs=1e-6)  # The fixture's test split is its train split.
  assert evaluator.floors["precision"] == evaluator.floors["recall"] == 1.0
  cached = sorted(os.listdir(f"{cfg.eval_cache_dir}/features"))
  # The fixture's splits hold the same 64 images, so one entry (keyed by content) serves reference and floor.
  assert len(cached) == 1 and all(n.startswith(f"classifier-{evaluator.feature_net.checksum}-28x28x1-")
                                  and n.endswith("-n64.npz") for n in cached), cached
  assert not [n for _, _, names in os.walk(cfg.eval_cache_dir) for n in names if n.endswith(files.TMP_SUFFIX)]
  # A second evaluator reads the network and the real features from the cache: nothing is computed again.
  monkeypatch.setattr(features, "predict", lambda *a, **k: pytest.fail("real features computed again"))
  monkeypatch.setattr(features, "train", lambda *a, **k: pytest.fail("feature network trained again"))
  again = evaluator_lib.Evaluator(cfg, strategy, gan)
  assert again.feature_net.checksum == evaluator.feature_net.checksum and again.floors == evaluator.floors


def test_noise_of_a_sample_depends_on_its_index_only(tmp_path):
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, arch="mlp", eval_num=10)
  evaluator = evaluator_lib.Evaluator(cfg, strategy, gan)
  noise_10, labels = evaluator.sample_inputs(10, truncation=0.0)
  noise_500, _ = evaluator.sample_inputs(500, truncation=0.0)
  np.testing.assert_array_equal(noise_10, noise_500[:10])
  assert labels.dtype == np.int32 and not labels.any()  # Unconditional: labels are ignored zeros.
  found = evaluator(gan.generator)
  assert set(found) == KEYS  # Unconditional: no label accuracy.
  _check_ranges(found)
  assert evaluator(gan.generator) == found  # The same generator, the same samples, the same figures.


def test_truncation_of_the_config_or_of_the_call_scores_truncated_noise(tmp_path):
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, arch="mlp", eval_num=16)
  plain = evaluator_lib.Evaluator(cfg, strategy, gan)
  noise, _ = plain.sample_inputs(16, truncation=0.0)
  truncated, _ = plain.sample_inputs(16, truncation=0.5)
  np.testing.assert_array_equal(truncated, sampling.truncate(noise, 0.5))
  assert np.abs(truncated).max() <= 0.5
  by_call = plain(gan.generator, truncation=0.5)
  by_config = evaluator_lib.Evaluator(cfg.replace(truncation=0.5), strategy, gan)(gan.generator)
  assert by_call == by_config
  assert by_call["fcd"] != plain(gan.generator)["fcd"]  # Other images were scored.
  assert plain(gan.generator, truncation=0.0) == plain(gan.generator)


def test_a_generator_of_nan_images_gets_nan_figures(tmp_path):
  """Images with NaN or inf pixels (a custom architecture, float16 overflow) get NaN figures: the trainer keeps no
  best checkpoint of them, `gan_dist.evaluate` prints null. The CPU's fused kernels of the feature network made all-NaN
  images finite features, one vector for all: they were scored FCD 6.0, classifier score 1.0, as if images."""
  strategy = tf.distribute.get_strategy()
  cfg, gan = _setup(tmp_path, strategy, arch="mlp", eval_num=8)
  evaluator = evaluator_lib.Evaluator(cfg, strategy, gan)
  gan.generator.set_weights([np.full_like(w, np.nan) for w in gan.generator.get_weights()])
  found = evaluator(gan.generator)
  assert set(found) == KEYS and all(np.isnan(v) for v in found.values()), found
  assert all(np.isfinite(v) for v in evaluator.floors.values())


def test_format_metrics_is_one_line_without_per_class_figures():
  line = evaluator_lib.format_metrics({"fcd": 3.3712, "label_accuracy": 0.98, "label_accuracy/3": 0.5, "kid": 0.1})
  assert line == "fcd 3.371  kid 0.1  label_accuracy 0.98"


def test_label_metrics_name_every_class():
  logits = np.eye(3)[[0, 1, 1]] * 10
  found = evaluator_lib.label_metrics(logits, np.array([0, 1, 2], np.int32), 3)
  assert found == pytest.approx({"label_accuracy": 2 / 3, "label_accuracy/0": 1.0, "label_accuracy/1": 1.0,
                                 "label_accuracy/2": 0.0})


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
  """(a folder of 60 unlabelled colour images, an evaluation cache) shared by the tests below that train its
  contrastive feature network (of CONTRASTIVE_STEPS=2: they patch it), so that the second one loads it."""
  root = tmp_path_factory.mktemp("colour")
  return helpers.make_image_folder(str(root / "images"), num=60, classes=(), bad=())["root"], str(root / "cache")


@pytest.mark.slow
def test_unlabelled_colour_data_is_evaluated_with_contrastive_features(tmp_path, monkeypatch, colour_folder):
  monkeypatch.setattr(features, "CONTRASTIVE_STEPS", 2)  # The procedure's path, not its quality.
  folder, cache = colour_folder  # 6 of its 60 images held out.
  cfg = helpers.config(tmp_path, arch="dcgan32", dataset="folder", data_dir=folder, eval_num=8, eval_cache_dir=cache)
  gan = models.build(cfg, 0)
  evaluator = evaluator_lib.Evaluator(cfg, tf.distribute.get_strategy(), gan)
  assert evaluator.feature_net.info["procedure"]["kind"] == "contrastive"
  assert set(evaluator.floors) == KEYS
  assert all(np.isfinite(v) for v in evaluator.floors.values())
  conditional = helpers.config(tmp_path, arch="cdcgan32", dataset="folder", data_dir=folder, eval_num=8,
                               eval_cache_dir=cache)
  with pytest.raises(errors.UserError, match="a conditional model needs a labelled dataset"):
    evaluator_lib.Evaluator(conditional, tf.distribute.get_strategy(), models.build(conditional, 2))


def test_bad_inception_weights_are_refused_before_building_and_before_the_feature_network_trains(tmp_path):
  bad = tmp_path / "not_inception.weights.h5"
  bad.write_bytes(b"not a weights file")
  missing = str(tmp_path / "missing.h5")
  for function in (inception.build, lambda path, _: inception.weights_checksum(path)):
    with pytest.raises(errors.UserError, match="is not a Keras InceptionV3 weights file"):
      function(str(bad), (28, 28, 1))
    with pytest.raises(errors.UserError, match="does not exist"):
      function(missing, (28, 28, 1))
  hdf5 = tmp_path / "other.h5"
  hdf5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
  assert inception.weights_checksum(str(hdf5)) == inception.weights_checksum(str(hdf5)) and \
      len(inception.weights_checksum(str(hdf5))) == 16
  # In a run: refused at once, nothing trained or cached (it used to come after the feature network's training,
  # as a NotFoundError traceback).
  cfg, gan = _setup(tmp_path, tf.distribute.get_strategy(), arch="mlp", eval_num=4, inception_weights=missing)
  with pytest.raises(errors.UserError, match=f"^--inception_weights={missing} does not exist"):
    evaluator_lib.Evaluator(cfg, tf.distribute.get_strategy(), gan)
  assert not os.path.exists(cfg.eval_cache_dir)


def test_an_evaluation_cache_that_cannot_be_written_is_refused_before_the_feature_network_trains(tmp_path):
  (tmp_path / "a_file").write_text("mine")
  cfg, gan = _setup(tmp_path, tf.distribute.get_strategy(), arch="mlp", eval_num=4)
  cfg = cfg.replace(eval_cache_dir=str(tmp_path / "a_file" / "cache"))
  with pytest.raises(errors.UserError, match=f"^--eval_cache_dir={tmp_path}/a_file/cache: {tmp_path}/a_file is a "
                                             "file, not a directory$"):
    evaluator_lib.Evaluator(cfg, tf.distribute.get_strategy(), gan)


@pytest.mark.slow
def test_inception_weights_from_a_file_give_fid_and_inception_score(tmp_path):
  weights = str(tmp_path / "inception_random.weights.h5")
  keras.utils.set_random_seed(1)
  keras.applications.InceptionV3(include_top=True, weights=None, classifier_activation=None).save_weights(weights)
  strategy = tf.distribute.get_strategy()
  # 4 images a set (the fewest k-NN precision and recall take): Inception-v3 runs at 299x299 whatever their size.
  cfg, gan = _setup(tmp_path, strategy, arch="mlp", eval_num=4, inception_weights=weights)
  evaluator = evaluator_lib.Evaluator(cfg, strategy, gan)
  found = evaluator(gan.generator)
  assert set(found) == KEYS | {"fid", "inception_score"} and set(evaluator.floors) == set(found)
  for figures_ in (found, evaluator.floors):
    assert np.isfinite(figures_["fid"]) and figures_["fid"] >= 0.0
    assert 1.0 - 1e-9 <= figures_["inception_score"] <= 1000.0
  assert any(n.startswith("inception-") for n in os.listdir(f"{cfg.eval_cache_dir}/features"))


@pytest.mark.slow
def test_training_with_eval_every_logs_metrics_and_keeps_the_best_checkpoint(tmp_path, one_device):
  cfg = helpers.config(tmp_path, arch="cgan_mlp", data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=64),
                       eval_cache_dir=str(tmp_path / "cache"), eval_num=40, eval_every=2, train_steps=4,
                       checkpoint_every=4, summary_every=2)
  train.run(cfg, one_device)
  scalars = figures.read_scalars(f"{cfg.workdir}/tensorboard")
  assert sorted(step for step, _ in scalars["eval/fcd"]) == [2, 4]
  assert "eval/label_accuracy/9" in scalars and "time/eval" in scalars
  # The floors once, at the first step the run trains: after its start, so that a resumed run's floors do not sit
  # beside the earlier run's at the resumed step.
  assert [step for step, _ in scalars["eval_floor/fcd"]] == [1]
  best = checkpoint_lib.read_best(cfg.workdir)
  fcd = dict(scalars["eval/fcd"])
  assert best["metric"] == "fcd" and best["value"] == pytest.approx(min(fcd.values()), rel=1e-5)
  assert fcd[best["step"]] == pytest.approx(best["value"], rel=1e-5)
  assert tf.io.gfile.exists(best["checkpoint"] + ".index")
  # TensorBoard's HParams table: every field that shapes the result, and the last and best FCD as metrics.
  values, metrics, name = figures.read_hparams(f"{cfg.workdir}/tensorboard")
  assert name == os.path.basename(cfg.workdir)  # The run's row is named by its workdir.
  resolved = workdir_lib.read_run_config(cfg.workdir)  # num_classes, image shape: what the run resolved.
  assert values == {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                    for k, v in config_lib.hparams(resolved).items()}
  assert values["arch"] == "cgan_mlp" and values["batch_size"] == 8 and "workdir" not in values
  assert metrics == list(train.HPARAM_METRICS)
  assert dict(scalars["hparams/fcd_last"]) == pytest.approx(fcd, rel=1e-6)
  assert scalars["hparams/fcd_best"][-1][1] == pytest.approx(min(fcd.values()), rel=1e-6)
  assert [s for s, _ in scalars["hparams/label_accuracy_last"]] == [2, 4]


@pytest.mark.slow
def test_held_out_folder_is_the_reference_and_memorization_is_reported(tmp_path, monkeypatch, colour_folder):
  """--eval_data_dir: the reference is the held-out folder, the floor the training images scored against it, and
  'memorization' (generated images nearer to a training image than to any held-out one) is in every evaluation;
  the floor's memorization is that of the held-out images themselves (leave-one-out)."""
  monkeypatch.setattr(features, "CONTRASTIVE_STEPS", 2)
  trained, cache = colour_folder
  # 10 held-out images, fewer than --eval_num=16 and than the 60 trained on: the sizes tell the sets apart.
  held_out = helpers.make_image_folder(str(tmp_path / "held_out"), num=10, classes=(), bad=(), seed=1)["root"]
  cfg = helpers.config(tmp_path, arch="dcgan32", dataset="folder", data_dir=trained, eval_data_dir=held_out,
                       eval_num=16, eval_cache_dir=cache)
  gan = models.build(cfg, 0)
  evaluator = evaluator_lib.Evaluator(cfg, tf.distribute.get_strategy(), gan)
  assert set(evaluator.floors) == KEYS | {"memorization"}
  assert (evaluator.num_reference, evaluator.num_floor) == (10, 16)  # Every held-out image; 16 of the trained.
  train_features, held_out_features = evaluator._memorization  # pylint: disable=protected-access
  assert (len(train_features), len(held_out_features)) == (16, 10)
  # The metrics' reference is the held-out images' features, not the training images'.
  np.testing.assert_array_equal(evaluator.extractors[0].reference.features, held_out_features)
  assert evaluator.floors["memorization"] == metrics_lib.memorization(held_out_features, train_features,
                                                                      held_out_features, leave_one_out=True)
  found = evaluator(gan.generator)
  assert set(found) == KEYS | {"memorization"} and 0.0 <= found["memorization"] <= 1.0
  # Without it: the training data's own splits, no memorization.
  plain = evaluator_lib.Evaluator(cfg.replace(eval_data_dir=""), tf.distribute.get_strategy(), gan)
  assert set(plain.floors) == KEYS and plain.floors["fcd"] != evaluator.floors["fcd"]
