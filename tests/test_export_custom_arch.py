"""The exports and the demo of a custom architecture (README "Your own architecture": export and the demo work for
it unchanged). This module is one (`--arch=tests.test_export_custom_arch`): its generator has layers of its own
classes (a Keras layer's subclass that computes something else, a layer no Keras class computes, a Lambda), trained
one step in mixed precision; every export must compute what the run itself samples."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import exporter
from gan_dist import inference
from gan_dist import sampling
from gan_dist import train
from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.serve import model as model_lib
from tests import helpers

LATENT_DIM = 8


class Tripled(keras.layers.Dense):
  """Dense times 3: its Keras base class (Dense) would compute something else."""

  def call(self, inputs):
    return super().call(inputs) * 3.0


class PixelNorm(keras.layers.Layer):
  """Each row scaled to unit mean square: no Keras class computes it."""

  def call(self, inputs):
    return inputs * tf.math.rsqrt(tf.reduce_mean(tf.square(inputs), axis=-1, keepdims=True) + 1e-8)


def build(cfg, num_classes: int = 0) -> Gan:
  """The architecture: an MLP generator of the classes above and a linear discriminator, 28x28x1."""
  del num_classes  # Unconditional.
  shape = resolve_image_shape(cfg, (28, 28, 1), (28,))
  noise = keras.Input((cfg.latent_dim,), name="noise")
  x = Tripled(32)(keras.layers.Dense(32)(noise))
  x = keras.layers.Lambda(lambda t: t + 0.5)(PixelNorm()(x))
  x = keras.layers.Reshape(shape)(keras.layers.Dense(28 * 28)(keras.layers.LeakyReLU(0.2)(x)))
  generator = keras.Model(noise, keras.layers.Activation("tanh", dtype="float32")(x), name="generator")
  images = keras.Input(shape)
  discriminator = keras.Model(images, float32_logits(keras.layers.Dense(1)(keras.layers.Flatten()(images))),
                              name="discriminator")
  return Gan(generator, discriminator, conditional=False, image_shape=shape, latent_dim=cfg.latent_dim)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_device):
  """(workdir, the images [6, 28, 28, 1] in [-1, 1] its run samples for seed 3 with the run's own generator)."""
  root = tmp_path_factory.mktemp("custom_arch")
  cfg = helpers.config(root, arch=__name__, data_dir=helpers.make_idx_dir(str(root / "idx"), num=32), train_steps=1,
                       precision="mixed_float16", latent_dim=LATENT_DIM)
  train.run(cfg, one_device)
  return cfg.workdir, inference.load(cfg.workdir).sample(6, seed=3)


def _noise():
  return sampling.noise(6, LATENT_DIM, seed=3, truncation=0.0)


def test_saved_model_and_demo_compute_what_the_run_samples(trained, tmp_path, caplog):
  workdir, expected = trained
  exporter.export(workdir, str(tmp_path / "export"))
  assert "needs, besides Keras" not in caplog.text  # A SavedModel is a traced graph: it needs no Python class.
  serving = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
  images = serving(noise=tf.constant(_noise()))["images"].numpy()
  assert expected.std() > 0.05
  # The float32 export of a mixed_float16 generator: float16 rounding apart (Dense alone would be far off).
  np.testing.assert_allclose(images.astype(int), sampling.to_uint8(expected).numpy().astype(int), atol=2)
  served = model_lib.from_workdir(workdir)
  np.testing.assert_array_equal(served.images(_noise(), np.zeros([6], np.int32)), images)


def test_keras_file_names_the_classes_it_needs_and_loads_with_them(trained, tmp_path, caplog):
  workdir, expected = trained
  out = str(tmp_path / "G.keras")
  exporter.export(workdir, out, fmt="keras")
  assert (f"Loading {out} needs, besides Keras: Tripled ({__name__}); PixelNorm ({__name__}); a Lambda layer's "
          "Python function (load with safe_mode=False)") in caplog.text
  model = keras.saving.load_model(out, custom_objects={"Tripled": Tripled, "PixelNorm": PixelNorm}, safe_mode=False)
  np.testing.assert_allclose(model.predict(_noise(), verbose=0), expected, atol=2e-2)
