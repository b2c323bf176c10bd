"""Conditional DCGAN for 28x28x1: the label enters G by concatenation and D by projection.

Generator: [noise [B, 100], one-hot [B, K]] concatenated -> Dense 7x7x128 (no bias) -> Reshape -> BN -> LeakyReLU
  0.2 -> Conv2DTranspose 64 (5x5, s2, no bias) -> BN -> LeakyReLU 0.2 -> Conv2DTranspose 1 (5x5, s2, tanh).
  With K=10: 110*6272 + 4*128 + 25*128*64 + 4*64 + (25*64+1) = 897,089 parameters (896,705 trainable).
  Concatenating the one-hot with the noise lets every unit of the first layer depend on the class; since that
  layer is linear, this equals adding a learned 7x7x128 class bias map before BatchNorm.
Discriminator: Conv2D 64 (5x5, s2) -> LeakyReLU 0.2 -> Dropout 0.3 -> Conv2D 128 (5x5, s2) -> LeakyReLU 0.2
  -> Dropout 0.3 -> Flatten = features h [B, 6272]; logit = Dense 1(h) + <embed(y), h>, where embed(y) is a
  bias-free Dense 6272 of the one-hot label. With K=10: (25*64+64) + (25*64*128+128) + (6272+1) + 10*6272
  = 275,585 parameters.

Why projection rather than concatenating a label map to the image: the projection discriminator (Miyato & Koyama
2018) follows from writing D's logit as the log density ratio of a conditional model, so the label acts on the
final features, where class identity is linearly readable, instead of on raw pixels, where a concatenated label
channel is easily ignored; it needs no extra input channel (the convolutions cost the same as the unconditional D),
and Miyato & Koyama report better class fidelity than concatenation. The per-class embedding is 10 x 6272 weights.
Image shape: 28x28 only; --channels 1 (native) or 3. For colour images at 32x32 to 64x64 use `cdcgan32`.
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import batch_norm, strided_conv_features

IMAGE_SHAPE = (28, 28, 1)


def make_generator(cfg, num_classes: int, shape=IMAGE_SHAPE) -> keras.Model:
  """[noise [B, latent_dim], one-hot [B, num_classes]] -> [B, 28, 28, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  onehot = keras.Input((num_classes,), name="onehot")
  x = layers.Concatenate()([noise, onehot])
  x = layers.Dense(7 * 7 * 128, use_bias=False)(x)
  x = layers.Reshape((7, 7, 128))(x)
  x = batch_norm(cfg)(x)
  x = layers.LeakyReLU(0.2)(x)
  x = layers.Conv2DTranspose(64, 5, strides=2, padding="same", use_bias=False)(x)
  x = batch_norm(cfg)(x)
  x = layers.LeakyReLU(0.2)(x)
  x = layers.Conv2DTranspose(shape[-1], 5, strides=2, padding="same")(x)
  images = layers.Activation("tanh", dtype="float32")(x)
  return keras.Model([noise, onehot], images, name="generator")


def make_discriminator(num_classes: int, shape=IMAGE_SHAPE) -> keras.Model:
  """[images [B, 28, 28, C], one-hot [B, num_classes]] -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  onehot = keras.Input((num_classes,), name="onehot")
  features = strided_conv_features(images, kernel_size=5, leaky_slope=0.2, dropout=0.3)
  embedding = layers.Dense(features.shape[-1], use_bias=False, name="class_embedding")(onehot)
  projection = layers.Dot(axes=1)([embedding, features])
  logits = layers.Add()([layers.Dense(1)(features), projection])
  return keras.Model([images, onehot], float32_logits(logits), name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  shape = resolve_image_shape(cfg, IMAGE_SHAPE, (28,))
  return Gan(make_generator(cfg, num_classes, shape), make_discriminator(num_classes, shape), conditional=True,
             image_shape=shape, latent_dim=cfg.latent_dim, num_classes=num_classes)
