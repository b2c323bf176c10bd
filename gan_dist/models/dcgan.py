"""The DCGAN of the TensorFlow tutorial (tensorflow.org/tutorials/generative/dcgan), 28x28x1.

Generator: Dense 7x7x256 -> BN -> LeakyReLU -> Conv2DTranspose 128 (5x5, s1) -> BN -> LeakyReLU
  -> Conv2DTranspose 64 (5x5, s2) -> BN -> LeakyReLU -> Conv2DTranspose 1 (5x5, s2, tanh); no biases.
  2,330,944 parameters (2,305,472 trainable).
Discriminator: Conv2D 64 (5x5, s2) -> LeakyReLU -> Dropout 0.3 -> Conv2D 128 (5x5, s2) -> LeakyReLU
  -> Dropout 0.3 -> Flatten -> Dense 1 logit. 212,865 parameters.
LeakyReLU keeps the tutorial's slope (Keras' default, 0.3).
Image shape: 28x28 only; --channels 1 (native) or 3 (the last layer's filters and D's input change).
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import batch_norm, strided_conv_features

IMAGE_SHAPE = (28, 28, 1)


def make_generator(cfg, shape=IMAGE_SHAPE) -> keras.Model:
  """[B, latent_dim] noise -> [B, 28, 28, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  x = layers.Dense(7 * 7 * 256, use_bias=False)(noise)
  x = batch_norm(cfg)(x)
  x = layers.LeakyReLU(0.3)(x)
  x = layers.Reshape((7, 7, 256))(x)
  for filters, stride in ((128, 1), (64, 2)):
    x = layers.Conv2DTranspose(filters, 5, strides=stride, padding="same", use_bias=False)(x)
    x = batch_norm(cfg)(x)
    x = layers.LeakyReLU(0.3)(x)
  x = layers.Conv2DTranspose(shape[-1], 5, strides=2, padding="same", use_bias=False)(x)
  images = layers.Activation("tanh", dtype="float32")(x)
  return keras.Model(noise, images, name="generator")


def make_discriminator(cfg, shape=IMAGE_SHAPE) -> keras.Model:
  """[B, 28, 28, C] images -> [B, 1] logits."""
  del cfg
  images = keras.Input(shape, name="images")
  features = strided_conv_features(images, kernel_size=5, leaky_slope=0.3, dropout=0.3)
  logits = float32_logits(layers.Dense(1)(features))
  return keras.Model(images, logits, name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = resolve_image_shape(cfg, IMAGE_SHAPE, (28,))
  return Gan(make_generator(cfg, shape), make_discriminator(cfg, shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
