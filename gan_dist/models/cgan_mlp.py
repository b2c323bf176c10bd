"""Conditional GAN (Mirza & Osindero 2014) with the fully connected networks of `mlp.py`, 28x28x1.

Generator: one-hot label [B, K] -> Dense latent_dim, concatenated with noise [B, latent_dim] -> the mlp generator
  body (Dense 256/512/1024, LeakyReLU 0.2, BN momentum 0.8, Dense 784 tanh). With K=10 and latent 100:
  label code 10*100+100 = 1,100, body 1,519,120 (its first Dense sees 200 inputs: 200*256+256 = 51,456)
  = 1,520,220 parameters (1,516,636 trainable).
Discriminator: flattened image [B, 784] concatenated with Dense 784 of the one-hot label -> Dense 512 -> LeakyReLU
  0.2 -> Dense 256 -> LeakyReLU 0.2 -> Dense 1 logit. Label code 10*784+784 = 8,624, body 1568*512+512 + 512*256+256
  + 257 = 934,913 = 943,537 parameters.

A Dense layer on a one-hot vector is a learned embedding lookup (Keras-GAN's cgan uses Embedding and multiplies it
with the input instead of concatenating). Concatenation gives D a label code of the image's own size, so the label
weighs as much as the pixels in the first layer. D returns logits; --loss=non_saturating is the source's sigmoid
plus binary cross-entropy.
Image shape: 28x28 only; --channels 1 (native) or 3, as `mlp`.
"""

import keras
from keras import layers

from gan_dist.models import Gan, mlp

IMAGE_SHAPE = mlp.IMAGE_SHAPE


def make_generator(cfg, num_classes: int, shape=IMAGE_SHAPE) -> keras.Model:
  """[noise [B, latent_dim], one-hot [B, num_classes]] -> [B, 28, 28, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  onehot = keras.Input((num_classes,), name="onehot")
  label_code = layers.Dense(cfg.latent_dim)(onehot)
  x = layers.Concatenate()([noise, label_code])
  return keras.Model([noise, onehot], mlp.generator_body(cfg, x, shape), name="generator")


def make_discriminator(num_classes: int, shape=IMAGE_SHAPE) -> keras.Model:
  """[images [B, 28, 28, C], one-hot [B, num_classes]] -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  onehot = keras.Input((num_classes,), name="onehot")
  flat = layers.Flatten()(images)
  label_code = layers.Dense(flat.shape[-1])(onehot)
  x = layers.Concatenate()([flat, label_code])
  return keras.Model([images, onehot], mlp.discriminator_body(x), name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  shape = mlp.image_shape(cfg)
  return Gan(make_generator(cfg, num_classes, shape), make_discriminator(num_classes, shape), conditional=True,
             image_shape=shape, latent_dim=cfg.latent_dim, num_classes=num_classes)
