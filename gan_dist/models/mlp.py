"""The classic fully connected GAN of Keras-GAN (eriklindernoren/Keras-GAN, gan/gan.py), 28x28x1.

Generator: noise [B, 100] -> Dense 256 -> LeakyReLU 0.2 -> BN -> Dense 512 -> LeakyReLU 0.2 -> BN -> Dense 1024
  -> LeakyReLU 0.2 -> BN -> Dense 784 tanh -> Reshape 28x28x1; BatchNormalization momentum 0.8, as in the source.
  1,493,520 parameters (1,489,936 trainable), the source's model.summary() with latent 100.
Discriminator: Flatten -> Dense 512 -> LeakyReLU 0.2 -> Dense 256 -> LeakyReLU 0.2 -> Dense 1 logit.
  533,505 parameters.

The source ends D with a sigmoid and trains with binary cross-entropy; here D returns the logit and --loss=
non_saturating computes softplus(-real) + softplus(fake) for D and softplus(-fake) for G, which is exactly that
binary cross-entropy (with G's "fake labelled real" target) evaluated stably from logits.

The body builders take and return tensors so that `cgan_mlp.py` reuses them behind its label inputs.
Image shape: 28x28 only; --channels 1 (native) or 3 (the output and input layers grow to 28*28*3 pixels).
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import batch_norm

IMAGE_SHAPE = (28, 28, 1)
GENERATOR_UNITS = (256, 512, 1024)
DISCRIMINATOR_UNITS = (512, 256)


def image_shape(cfg):
  """(H, W, C) for `cfg` (raises ValueError for a shape this architecture cannot make)."""
  return resolve_image_shape(cfg, IMAGE_SHAPE, (28,))


def generator_body(cfg, x, shape=IMAGE_SHAPE):
  """Maps a [B, n] input (noise, or noise with a label code) to [B, 28, 28, C] float32 images in [-1, 1]."""
  for units in GENERATOR_UNITS:
    x = layers.Dense(units)(x)
    x = layers.LeakyReLU(0.2)(x)
    x = batch_norm(cfg, momentum=0.8)(x)
  x = layers.Dense(shape[0] * shape[1] * shape[2])(x)
  x = layers.Activation("tanh", dtype="float32")(x)
  return layers.Reshape(shape, dtype="float32")(x)


def discriminator_body(x):
  """Maps [B, n] flat features (pixels, optionally with a label code) to [B, 1] float32 logits."""
  for units in DISCRIMINATOR_UNITS:
    x = layers.Dense(units)(x)
    x = layers.LeakyReLU(0.2)(x)
  return float32_logits(layers.Dense(1)(x))


def make_generator(cfg, shape=IMAGE_SHAPE) -> keras.Model:
  """[B, latent_dim] noise -> [B, 28, 28, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  return keras.Model(noise, generator_body(cfg, noise, shape), name="generator")


def make_discriminator(shape=IMAGE_SHAPE) -> keras.Model:
  """[B, 28, 28, C] images -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  return keras.Model(images, discriminator_body(layers.Flatten()(images)), name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = image_shape(cfg)
  return Gan(make_generator(cfg, shape), make_discriminator(shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
