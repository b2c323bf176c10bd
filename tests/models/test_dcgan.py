"""The TF-tutorial DCGAN: shapes, ranges and the tutorial's parameter counts."""

import numpy as np
import tensorflow as tf

from gan_dist import models
from tests import helpers


def test_shapes_ranges_and_parameter_counts():
  gan = models.build(helpers.config_values(arch="dcgan"))
  assert gan.image_shape == (28, 28, 1) and not gan.conditional
  images = gan.generator(tf.random.normal([3, 100]), training=False)
  assert images.shape == (3, 28, 28, 1) and images.dtype == tf.float32
  assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
  logits = gan.discriminator(images, training=False)
  assert logits.shape == (3, 1) and logits.dtype == tf.float32
  # The tutorial's model.summary(): generator 2,330,944 parameters (2,305,472 trainable: the 25,472 BN moving
  # statistics are not), discriminator 212,865.
  assert gan.generator.count_params() == 2_330_944
  assert sum(int(np.prod(v.shape)) for v in gan.generator.trainable_variables) == 2_305_472
  assert gan.discriminator.count_params() == 212_865
