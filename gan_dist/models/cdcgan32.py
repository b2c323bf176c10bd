"""Conditional `dcgan32` (the standard CNN of Miyato et al. 2018) for 32x32x3, 48x48 and 64x64: class labels of a
folder of images (class subfolders) or of a TFDS dataset (e.g. CIFAR-10's ten classes).

Generator: [noise [B, latent_dim], one-hot [B, K]] concatenated -> the dcgan32 generator body (Dense M/8 x M/8
  x 512, Conv2DTranspose 256/128/64 with BN and ReLU, Conv2D 3x3 tanh). At 32x32x3, latent 100, K=10: dcgan32's
  3,583,427 plus 10*8192 for the one-hot inputs of the Dense layer = 3,665,347 parameters (3,664,451 trainable).
Discriminator: the dcgan32 body (seven 3x3/4x4 convolutions 64..512, LeakyReLU 0.1) -> Flatten = h [B, M/8 * M/8
  * 512]; logit = Dense 1(h) + <embed(y), h> with embed a bias-free Dense of the one-hot label (projection, Miyato
  & Koyama 2018). At 32x32x3, K=10: 2,935,873 + 10*8192 = 3,017,793 parameters.

Why a conditional variant of dcgan32 rather than a bigger `cdcgan`: `cdcgan` is the 28x28 MNIST tutorial network
(two upsamplings from 7x7); stretching it to 64x64 would leave a two-layer generator drawing 64x64 colour images
from 16x16 maps. dcgan32 is the benchmark network for colour images at these sizes, so the conditional and the
unconditional runs on the same folder differ only by the labels. The label enters G by concatenation with the
noise (as in `cdcgan`: a learned class bias of the first layer) and D by projection (see `cdcgan.py` for why
projection rather than a label channel).
"""

import keras
from keras import layers

from gan_dist.models import Gan, dcgan32, float32_logits


def make_generator(cfg, num_classes: int, shape) -> keras.Model:
  """[noise [B, latent_dim], one-hot [B, num_classes]] -> [B, H, W, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  onehot = keras.Input((num_classes,), name="onehot")
  x = layers.Concatenate()([noise, onehot])
  return keras.Model([noise, onehot], dcgan32.generator_body(cfg, x, shape), name="generator")


def make_discriminator(num_classes: int, shape) -> keras.Model:
  """[images [B, H, W, C], one-hot [B, num_classes]] -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  onehot = keras.Input((num_classes,), name="onehot")
  features = dcgan32.discriminator_features(images)
  embedding = layers.Dense(features.shape[-1], use_bias=False, name="class_embedding")(onehot)
  projection = layers.Dot(axes=1)([embedding, features])
  logits = layers.Add()([layers.Dense(1)(features), projection])
  return keras.Model([images, onehot], float32_logits(logits), name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  shape = dcgan32.image_shape(cfg)
  return Gan(make_generator(cfg, num_classes, shape), make_discriminator(num_classes, shape), conditional=True,
             image_shape=shape, latent_dim=cfg.latent_dim, num_classes=num_classes)
