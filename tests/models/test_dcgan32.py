"""dcgan32: the standard CNN of Miyato et al. 2018 (Table 3), layer by layer, with its parameter counts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import models
from tests import helpers


def _layers(model, kind):
  return [l for l in model.layers if isinstance(l, kind)]


def test_generator_layers_and_parameter_count():
  gan = models.build(helpers.config_values(arch="dcgan32", latent_dim=128))
  g = gan.generator
  assert gan.image_shape == (32, 32, 3) and not gan.conditional
  dense = _layers(g, keras.layers.Dense)
  assert len(dense) == 1 and dense[0].units == 4 * 4 * 512 and dense[0].use_bias
  deconvs = _layers(g, keras.layers.Conv2DTranspose)
  assert [(l.filters, l.kernel_size, l.strides) for l in deconvs] == [(f, (4, 4), (2, 2)) for f in (256, 128, 64)]
  assert len(_layers(g, keras.layers.BatchNormalization)) == 3 and len(_layers(g, keras.layers.ReLU)) == 3
  (last,) = _layers(g, keras.layers.Conv2D)[-1:]
  assert (last.filters, last.kernel_size, last.strides) == (3, (3, 3), (1, 1))
  # 128*8192+8192 + 16*512*256 + 4*256 + 16*256*128 + 4*128 + 16*128*64 + 4*64 + (9*64*3+3)
  assert g.count_params() == 3_812_803
  assert sum(int(np.prod(v.shape)) for v in g.trainable_variables) == 3_811_907
  images = g(tf.random.stateless_normal([2, 128], seed=[1, 2]), training=False)
  assert images.shape == (2, 32, 32, 3) and float(tf.reduce_max(tf.abs(images))) <= 1.0


def test_discriminator_layers_and_parameter_count():
  d = models.build(helpers.config_values(arch="dcgan32")).discriminator
  convs = [l for l in _layers(d, keras.layers.Conv2D) if not isinstance(l, keras.layers.Conv2DTranspose)]
  assert [(l.filters, l.kernel_size[0], l.strides[0]) for l in convs] == [
      (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]
  slopes = {float(l.negative_slope) for l in _layers(d, keras.layers.LeakyReLU)}
  assert slopes == {0.1} and len(_layers(d, keras.layers.LeakyReLU)) == 7
  assert not _layers(d, keras.layers.BatchNormalization) and not _layers(d, keras.layers.Dropout)
  # (27*64+64) + (16*64*64+64) + (9*64*128+128) + (16*128*128+128) + (9*128*256+256) + (16*256*256+256)
  # + (9*256*512+512) + (4*4*512+1)
  assert d.count_params() == 2_935_873
  assert d(tf.zeros([2, 32, 32, 3])).shape == (2, 1)


def test_unsupported_shape_names_the_supported_ones():
  with pytest.raises(ValueError) as error:
    models.build(helpers.config_values(arch="dcgan32", image_size=40))
  message = str(error.value)
  assert "\n" not in message and "32x32 or 48x48 or 64x64" in message and "40x40x3" in message
