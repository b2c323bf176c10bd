"""exporter.py: a workdir's generator as a SavedModel and a Keras file, used where gan_dist is not installed."""

import json
import logging as py_logging
import os
import site
import subprocess
import sys
import textwrap

from absl import logging
import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import errors
from gan_dist import exporter
from gan_dist import files
from gan_dist import inference
from gan_dist import models
from gan_dist import sampling
from tests.serve import workdirs

# Run here without gan_dist: `python -S` skips site-packages' .pth files (where an editable install of gan_dist
# lives) and the script adds the plain site-packages folders (TensorFlow, Keras) back by hand.
_CLEAN_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = json.loads(sys.argv[1])
    try:
      import gan_dist
      sys.exit("gan_dist is importable from " + gan_dist.__file__)
    except ImportError:
      pass
    import keras, numpy as np, tensorflow as tf
    out = {}
    for kind in ("unconditional", "conditional"):
      inputs = np.load(kind + "_inputs.npz")
      noise = inputs["noise"]
      model = keras.saving.load_model(kind + ".keras")
      if "labels" in inputs:
        onehot = np.eye(int(inputs["num_classes"]), dtype=np.float32)[inputs["labels"]]
        out[kind + "_keras"] = model.predict([noise, onehot], verbose=0)
        kwargs = dict(noise=tf.constant(noise), labels=tf.constant(inputs["labels"]))
      else:
        out[kind + "_keras"] = model.predict(noise, verbose=0)
        kwargs = dict(noise=tf.constant(noise))
      serving = tf.saved_model.load(kind + "_saved_model").signatures["serving_default"]
      out[kind + "_saved_model"] = serving(**kwargs)["images"].numpy()
    np.savez("outputs.npz", **out)
    print("loaded without gan_dist")
    """)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Both kinds exported in both formats into one folder, with the inputs and the generators' own outputs."""
  folder = tmp_path_factory.mktemp("exports")
  expected = {}
  for kind in workdirs.KINDS:
    workdir = workdirs.trained(kind, tmp_path_factory)
    assert exporter.export(workdir, str(folder / f"{kind}.keras"), fmt="keras") == str(folder / f"{kind}.keras")
    exporter.export(workdir, str(folder / f"{kind}_saved_model"))
    run = inference.load(workdir)
    noise, labels = sampling.inputs(6, run.gan.latent_dim, run.gan.num_classes, seed=3, truncation=0.0)
    arrays = dict(noise=noise, num_classes=run.gan.num_classes)
    if run.gan.conditional:  # The clean script feeds labels only to models that take them.
      arrays["labels"] = labels
    np.savez(folder / f"{kind}_inputs.npz", **arrays)
    images = run.gan.generate(tf.constant(noise), tf.constant(labels), generator=run.generator)
    expected[kind] = dict(run=run, noise=noise, labels=labels, images=np.asarray(images, np.float32))
  return folder, expected


def _serving(path):
  return tf.saved_model.load(str(path)).signatures["serving_default"]


@pytest.mark.slow
def test_saved_model_signature_is_noise_and_labels_to_uint8_images(exported):
  folder, expected = exported
  for kind, inputs in (("conditional", {"noise", "labels"}), ("unconditional", {"noise"})):
    serving = _serving(folder / f"{kind}_saved_model")
    assert set(serving.structured_input_signature[1]) == inputs
    assert serving.structured_input_signature[1]["noise"].shape.as_list() == [None, workdirs.LATENT_DIM]
    assert set(serving.structured_outputs) == {"images"}
    kwargs = {name: tf.constant(expected[kind][name]) for name in inputs}
    images = serving(**kwargs)["images"].numpy()
    assert images.dtype == np.uint8 and images.shape == (6, 28, 28, 1) and images.std() > 5
    np.testing.assert_allclose(images.astype(int), sampling.to_uint8(expected[kind]["images"]).numpy().astype(int),
                               atol=4 if kind == "conditional" else 1)  # A float32 copy of a float16 network.
  # A label outside the classes is refused, not drawn as an image of no class.
  serving = _serving(folder / "conditional_saved_model")
  noise = tf.constant(expected["conditional"]["noise"][:2])
  k = expected["conditional"]["run"].gan.num_classes
  for bad in ([0, k], [-1, 0]):
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"labels must be class ids in \[0, {k}\)"):
      serving(noise=noise, labels=tf.constant(bad, tf.int32))


@pytest.mark.slow
def test_keras_file_and_saved_model_run_without_gan_dist(exported):
  folder, expected = exported
  (folder / "load.py").write_text(_CLEAN_SCRIPT)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  result = subprocess.run([sys.executable, "-S", "load.py", json.dumps(site.getsitepackages())], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=240, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loaded without gan_dist" in result.stdout
  outputs = np.load(folder / "outputs.npz")
  # The float32 export of a mixed_float16 generator differs from it by float16 rounding only.
  for kind, atol in (("unconditional", 1e-5), ("conditional", 2e-2)):
    images = expected[kind]["images"]
    keras_images = outputs[f"{kind}_keras"]
    assert keras_images.dtype == np.float32 and keras_images.shape == images.shape == (6, 28, 28, 1)
    assert keras_images.std() > 0.01
    np.testing.assert_allclose(keras_images, images, atol=atol)
    saved = outputs[f"{kind}_saved_model"]
    assert saved.dtype == np.uint8 and saved.shape == images.shape
    np.testing.assert_allclose(saved.astype(int), np.round((images + 1) * 127.5).astype(int), atol=1 + 127.5 * atol)
    # Both exports are the same float32 network.
    np.testing.assert_allclose(saved.astype(int), np.round((keras_images + 1) * 127.5).astype(int), atol=1)


@pytest.mark.slow
def test_saved_model_cli_runs_the_serving_signature(exported, tmp_path):
  folder, expected = exported
  noise, labels = expected["conditional"]["noise"][:2], expected["conditional"]["labels"][:2]
  np.save(tmp_path / "noise.npy", noise)
  np.save(tmp_path / "labels.npy", labels)
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  command = [cli] if os.path.exists(cli) else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
  result = subprocess.run(
      command + ["run", "--dir", str(folder / "conditional_saved_model"), "--tag_set", "serve", "--signature_def",
                 "serving_default", "--inputs", "noise=noise.npy;labels=labels.npy", "--outdir", "out"],
      cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  images = np.load(tmp_path / "out" / "images.npy")
  serving = _serving(folder / "conditional_saved_model")
  np.testing.assert_array_equal(images, serving(noise=tf.constant(noise), labels=tf.constant(labels))["images"])


@pytest.mark.slow
def test_exports_hold_the_ema_generator_and_the_facts(exported):
  folder, expected = exported
  run = expected["conditional"]["run"]
  weights = keras.saving.load_model(folder / "conditional.keras").get_weights()
  ema = run.state.ema_generator.get_weights()
  assert all(w.dtype == np.float32 for w in weights)
  assert all(np.array_equal(a, b) for a, b in zip(weights, ema))
  assert not all(np.array_equal(a, b) for a, b in zip(weights, run.gan.generator.get_weights()))
  facts = exporter.read_facts(str(folder / "conditional_saved_model"))
  assert facts == dict(arch="cgan_mlp", dataset="mnist", step=1, ema=True, ema_decay=0.9, image_shape=[28, 28, 1],
                       conditional=True, num_classes=10, latent_dim=workdirs.LATENT_DIM,
                       train_precision="mixed_float16", truncation=0.0, class_names=[""] * 10)  # (IDX: no names)
  assert facts == inference.facts(run)
  facts = exporter.read_facts(str(folder / "unconditional_saved_model"))
  assert (facts["arch"], facts["ema"], facts["conditional"], facts["num_classes"]) == ("mlp", False, False, 0)
  assert not [p for p in folder.rglob(f"*{files.TMP_SUFFIX}")]
  with pytest.raises(FileNotFoundError, match="gan_dist.json not found"):
    exporter.read_facts(str(folder))


def test_saved_model_export_leaves_the_absl_log_level_as_it_was(tmp_path, tmp_path_factory):
  """TensorFlow's SavedModel writer pinned an unset absl logger at WARNING: every INFO line of what followed in the
  process (a notebook training on after exporting, a later test capturing INFO) was lost."""
  workdir = workdirs.trained("unconditional", tmp_path_factory)
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  try:
    for before in (py_logging.NOTSET, py_logging.DEBUG):
      absl_logger.setLevel(before)
      exporter.export(workdir, str(tmp_path / f"export{before}"))
      assert absl_logger.level == before
  finally:
    absl_logger.setLevel(level)


@pytest.mark.parametrize("fmt, out, problem", [
    ("keras", "G.h5", "must end with .keras"),
    ("saved_model", "G.keras", "names a Keras file"),
    ("onnx", "G.onnx", "not one of saved_model, keras"),
    ("keras", "", "--out is empty"),
])
def test_bad_output_refused_before_reading_the_workdir(tmp_path, fmt, out, problem):
  with pytest.raises(errors.UserError, match=problem):
    exporter.export(str(tmp_path / "missing"), out, fmt=fmt)
  assert not os.listdir(tmp_path)


def test_a_missing_workdir_or_step_is_a_user_error(tmp_path, tmp_path_factory):
  with pytest.raises(errors.UserError, match="flags.txt not found"):
    exporter.export(str(tmp_path / "missing"), str(tmp_path / "out"))
  with pytest.raises(errors.UserError, match=r"no checkpoint at step 7 in .*; there are: 1$"):
    exporter.export(workdirs.trained("unconditional", tmp_path_factory), str(tmp_path / "out"), step=7)
  assert not (tmp_path / "out").exists()


def _broadcasting_conditional_gan(num_classes=3, latent_dim=4):
  """A conditional Gan whose generator combines noise and labels by a product, as conditional BatchNorm does: a
  batch of one broadcasts against the other's batch instead of failing."""
  noise, onehot = keras.Input((latent_dim,), name="noise"), keras.Input((num_classes,), name="onehot")
  x = keras.layers.Multiply()([keras.layers.Dense(4)(noise), keras.layers.Dense(4)(onehot)])
  generator = keras.Model([noise, onehot], keras.layers.Reshape((2, 2, 1))(keras.layers.Activation("tanh")(x)))
  images = keras.Input((2, 2, 1))
  discriminator = keras.Model(images, keras.layers.Dense(1)(keras.layers.Flatten()(images)))
  return generator, models.Gan(generator, discriminator, conditional=True, image_shape=(2, 2, 1),
                               latent_dim=latent_dim, num_classes=num_classes)


@pytest.mark.parametrize("num_noise, num_labels", [(4, 1), (1, 4), (4, 2)])
def test_serving_refuses_labels_and_noise_of_different_batches(num_noise, num_labels):
  """One class id per noise row, as README says: a conditional-BatchNorm generator would otherwise broadcast a single
  label over every row (or one noise row over every label), silently, and other mismatches fail deep in the graph."""
  generator, gan = _broadcasting_conditional_gan()
  function, signature = exporter.serving_function(generator, gan)
  serving = tf.function(function, input_signature=signature, autograph=False)
  assert serving(tf.zeros([4, 4]), tf.constant([0, 1, 2, 0]))["images"].shape == (4, 2, 2, 1)
  with pytest.raises(tf.errors.InvalidArgumentError, match="labels must hold one class id per row of noise"):
    serving(tf.ones([num_noise, 4]), tf.zeros([num_labels], tf.int32))


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_serving_refuses_noise_that_is_not_finite(conditional, bad):
  """A NaN or Inf in a client's noise made black images (NaN pixels cast to uint8), silently."""
  generator, gan = _broadcasting_conditional_gan()
  if not conditional:
    noise = keras.Input((4,))
    generator = keras.Model(noise, keras.layers.Reshape((2, 2, 1))(keras.layers.Dense(4, activation="tanh")(noise)))
    gan = models.Gan(generator, gan.discriminator, conditional=False, image_shape=(2, 2, 1), latent_dim=4)
  function, signature = exporter.serving_function(generator, gan)
  serving = tf.function(function, input_signature=signature, autograph=False)
  labels = [tf.constant([0, 1])] if conditional else []
  assert serving(tf.ones([2, 4]), *labels)["images"].shape == (2, 2, 2, 1)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"noise must be finite \(no NaN or Inf\)"):
    serving(tf.constant([[0.0, 0.0, 0.0, 0.0], [0.0, bad, 0.0, 0.0]], tf.float32), *labels)
