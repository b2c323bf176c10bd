"""serve/model.py: deterministic inputs, one trace per batch bucket, and the two ways of loading a model."""

import logging

import numpy as np
import pytest
from tensorflow.python.eager.polymorphic_function import polymorphic_function

from gan_dist import exporter
from gan_dist import inference
from gan_dist import sample as sample_lib
from gan_dist import sampling
from gan_dist.serve import model as model_lib
from tests.serve import workdirs


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
  return model_lib.from_workdir(workdirs.trained("conditional", tmp_path_factory))


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
  return model_lib.from_workdir(workdirs.trained("unconditional", tmp_path_factory))


def test_generation_is_traced_once_per_bucket(conditional):
  model = model_lib.ServedModel(conditional._images_fn, conditional.facts)  # pylint: disable=protected-access
  for num in (1, 3, 5, 64, 2, 7, 33, 64, 1, 100, 4):
    noise, labels = model.inputs(num, seed=num, truncation=0.0)
    images = model.images(noise, labels)
    assert images.shape == (num, 28, 28, 1) and images.dtype == np.uint8
  # 100 images run as 64 + 36 (padded to 64): no new shape.
  assert model.trace_counts == {1: 1, 2: 1, 4: 1, 8: 1, 64: 1}
  assert model_lib.bucket(1) == 1 and model_lib.bucket(5) == 8 and model_lib.bucket(64) == 64


def test_requests_of_every_bucket_trace_each_once_and_log_no_retracing_warning(conditional, caplog, monkeypatch):
  # TensorFlow's retracing detector is global and warns at most twice per Python function: the other tests' models
  # may have spent that already. A fresh one warns as it would in a new server process.
  monkeypatch.setattr(polymorphic_function, "_frequent_tracing_detector_manager",
                      polymorphic_function._FrequentTracingDetectorManager())  # pylint: disable=protected-access
  model = model_lib.ServedModel(conditional._images_fn, conditional.facts)  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING, logger="tensorflow"):
    # Every bucket (7 of them, enough for TensorFlow's "5 out of the last N calls" rule), then some again.
    for num in (1, 2, 3, 5, 9, 17, 33, 64, 1, 7, 40, 2):
      images = model.images(*model.inputs(num, seed=num, truncation=0.0))
      assert images.shape == (num, 28, 28, 1)
  assert model.trace_counts == {b: 1 for b in model_lib.BUCKETS}
  tensorflow_warnings = [r.getMessage() for r in caplog.records if r.name == "tensorflow"]
  assert not [m for m in tensorflow_warnings if "retracing" in m], tensorflow_warnings


def test_the_default_truncation_is_the_run_s_and_none_for_exports_from_before_it_was_a_fact(conditional):
  assert conditional.facts["truncation"] == 0.0 and conditional.truncation == 0.0
  images_fn = conditional._images_fn  # pylint: disable=protected-access
  assert model_lib.ServedModel(images_fn, dict(conditional.facts, truncation=0.5)).truncation == 0.5
  older = {k: v for k, v in conditional.facts.items() if k != "truncation"}  # An export's facts before the field.
  assert model_lib.ServedModel(images_fn, older).truncation == 0.0


def test_image_i_of_a_seed_does_not_depend_on_how_many_are_asked(conditional):
  few_noise, few_labels = conditional.inputs(3, seed=7, truncation=0.0)
  many_noise, many_labels = conditional.inputs(40, seed=7, truncation=0.0)
  np.testing.assert_array_equal(few_noise, many_noise[:3])
  np.testing.assert_array_equal(few_labels, many_labels[:3])
  # Other batch sizes may sum in another order: at most one grey level apart.
  few = conditional.images(few_noise, few_labels).astype(int)
  many = conditional.images(many_noise, many_labels).astype(int)
  np.testing.assert_allclose(few, many[:3], atol=1)
  np.testing.assert_array_equal(conditional.images(few_noise, few_labels), few)
  assert many.std() > 5  # Generated pictures, not a blank.


def test_inputs_are_the_sampling_library_s(conditional, unconditional):
  noise, labels = conditional.inputs(12, seed=0, truncation=0.0)
  np.testing.assert_array_equal(noise, sampling.noise(12, workdirs.LATENT_DIM, 0, truncation=0.0))
  np.testing.assert_array_equal(labels, np.arange(12) % 10)
  _, labels = conditional.inputs(4, seed=0, label=3, truncation=0.0)
  np.testing.assert_array_equal(labels, [3, 3, 3, 3])
  _, labels = unconditional.inputs(4, seed=0, truncation=0.0)  # Unconditional models get zeros, which they ignore.
  assert labels.dtype == np.int32 and not labels.any()


def test_walk_goes_from_seed_a_to_seed_b(conditional):
  noise, labels = conditional.walk_inputs(5, 9, frames=7, label=4, truncation=0.0)
  assert noise.shape == (7, workdirs.LATENT_DIM) and noise.dtype == np.float32
  np.testing.assert_allclose(noise[0], conditional.inputs(1, 5, truncation=0.0)[0][0], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(noise[-1], conditional.inputs(1, 9, truncation=0.0)[0][0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(labels, np.full(7, 4))
  # Spherical interpolation keeps the norm near that of the end points (a straight line would shrink it by ~30%).
  norms = np.linalg.norm(noise, axis=1)
  assert norms.min() > 0.9 * min(norms[0], norms[-1])
  same, labels = conditional.walk_inputs(5, 5, frames=3, truncation=0.0)
  np.testing.assert_allclose(same, np.repeat(same[:1], 3, axis=0), atol=1e-6)
  np.testing.assert_array_equal(labels, [0, 0, 0])  # No class: that of a grid's first image.
  images = conditional.images(*conditional.walk_inputs(0, 1, frames=4, label=2, truncation=0.0))
  assert images.shape == (4, 28, 28, 1)


def test_saved_model_serves_the_same_images_and_facts(conditional, unconditional, tmp_path, tmp_path_factory):
  for kind, from_workdir in (("conditional", conditional), ("unconditional", unconditional)):
    path = exporter.export(workdirs.trained(kind, tmp_path_factory), str(tmp_path / kind))
    served = model_lib.from_saved_model(path)
    assert served.facts["source"] == "saved_model"
    assert dict(served.facts, source="workdir") == from_workdir.facts
    noise, labels = from_workdir.inputs(5, seed=11, truncation=0.0)
    np.testing.assert_array_equal(served.images(noise, labels), from_workdir.images(noise, labels))
  with pytest.raises(FileNotFoundError, match="saved_model.pb not found"):
    model_lib.from_saved_model(str(tmp_path / "missing"))


def test_the_demo_draws_gan_dist_sample_s_images(conditional, unconditional, tmp_path_factory):
  """The same bytes for a float32 run; a mixed_float16 run's gan_dist.sample computes in float16, the demo (and the
  exports) in float32: float16 rounding apart (the module docstring)."""
  for kind, served, atol in (("unconditional", unconditional, 0), ("conditional", conditional, 4)):
    run = inference.load(workdirs.trained(kind, tmp_path_factory))
    sampled = sample_lib.sample(run, 6, seed=5)["images"]
    demo = served.images(*served.inputs(6, seed=5, truncation=0.0))
    np.testing.assert_allclose(demo.astype(int), sampled.astype(int), atol=atol)
