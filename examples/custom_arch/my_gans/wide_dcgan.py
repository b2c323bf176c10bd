"""A wide DCGAN for 28x28 or 32x32 images, written outside gan_dist: train it with --arch=my_gans.wide_dcgan.

gan_dist calls `build(cfg, num_classes)` and expects a `gan_dist.models.Gan`: a Keras generator (noise
[B, latent_dim] -> images [B, H, W, C] in [-1, 1], float32) and a Keras discriminator (images -> logits [B, 1],
float32), plus the image shape and latent size. Everything else (strategies, mixed precision, checkpoints and
exact resume, evaluation, sampling, export, the demo) works for it unchanged. Build plain Keras layers (they are
created under the run's strategy scope and dtype policy); keep the outputs float32 (`float32_logits`).
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape

WIDTH = 96  # Channels of the first convolution of D and of the last of G, doubled per resolution.


def _generator(cfg, shape) -> keras.Model:
  size, channels = shape[0], shape[2]
  start = size // 4
  noise = keras.Input((cfg.latent_dim,), name="noise")
  x = layers.Dense(start * start * 4 * WIDTH)(noise)
  x = layers.Reshape((start, start, 4 * WIDTH))(x)
  for filters in (2 * WIDTH, WIDTH):
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same")(x)
    x = layers.BatchNormalization(synchronized=cfg.sync_batchnorm)(x)
    x = layers.ReLU()(x)
  x = layers.Conv2D(channels, 3, padding="same")(x)
  return keras.Model(noise, layers.Activation("tanh", dtype="float32")(x), name="generator")


def _discriminator(shape) -> keras.Model:
  images = keras.Input(shape, name="images")
  x = images
  for filters in (WIDTH, 2 * WIDTH):
    x = layers.Conv2D(filters, 4, strides=2, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
  x = layers.Flatten()(x)
  return keras.Model(images, float32_logits(layers.Dense(1)(x)), name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = resolve_image_shape(cfg, (28, 28, 1), (28, 32))
  return Gan(_generator(cfg, shape), _discriminator(shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
