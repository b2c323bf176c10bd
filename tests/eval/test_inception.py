"""Inception-v3's preprocessing (value range, grey to 3 channels, resize to 299) and inference mode, on random
weights written as a weights file (the real ones are not downloaded)."""

import keras
import numpy as np
import tensorflow as tf

from gan_dist.eval import inception


def test_features_are_those_of_keras_preprocessing_and_bilinear_resize_in_inference_mode(tmp_path):
  """uint8 pixels p: the evaluator's images p / 127.5 - 1 are InceptionV3's `preprocess_input` range; grey images
  repeated to 3 channels, resized to 299x299 bilinear (half-pixel centres, no antialiasing, as pytorch-fid's
  F.interpolate). Called without training=False the model ran its BatchNorms on the batch's statistics and moved
  their moving averages for good (features 0.75 off, then 0.015 off in inference mode)."""
  keras.utils.set_random_seed(1)
  base = keras.applications.InceptionV3(include_top=True, weights=None, classifier_activation=None)
  rng = np.random.RandomState(0)
  for layer in base.layers:  # Moving statistics unlike a batch's, so that training mode shows.
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
      layer.moving_mean.assign(rng.uniform(-0.1, 0.1, layer.moving_mean.shape))
  weights = str(tmp_path / "inception_random.weights.h5")
  base.save_weights(weights)
  trunk = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])
  pixels = rng.randint(0, 256, (2, 28, 28, 1)).astype(np.uint8)
  expected_input = tf.image.resize(keras.applications.inception_v3.preprocess_input(
      np.repeat(pixels, 3, axis=-1).astype(np.float32)), (299, 299), method="bilinear", antialias=False)
  expected = [np.asarray(t) for t in trunk(expected_input, training=False)]
  model = inception.build(weights, (28, 28, 1))
  images = pixels.astype(np.float32) / 127.5 - 1.0
  for found in (model(images), model(images, training=False), model.predict(images, verbose=0)):
    assert found[0].shape == (2, 2048) and found[1].shape == (2, 1000)
    np.testing.assert_allclose(found[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found[1], expected[1], rtol=1e-5, atol=1e-6)
