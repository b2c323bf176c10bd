"""Conditional `resnet` (class labels): conditional BatchNorm in G (BigGAN's shared embedding) and the projection
discriminator (Miyato & Koyama 2018), for a folder of images with class subfolders or a TFDS dataset with labels.

Generator: [noise [B, latent_dim], one-hot [B, K]]. e = one-hot @ E, a shared class embedding [B, 128] (a bias-free
  Dense on the one-hot label: a lookup table, not spectrally normalised, as BigGAN's shared embedding), read by
  every conditional BatchNorm through its own copy (models.layers.FanOut, for exact resumes). The network
  is resnet's generator with every BatchNorm of the up blocks replaced by a models.layers.ConditionalBatchNorm of e:
  BN(x) * (1 + SN Dense(e)) + SN Dense(e) (both bias-free, one pair per BatchNorm). The noise enters only through
  the first Dense layer (BigGAN's hierarchical latent, chunks of z concatenated with e, is left out: simpler, and
  the label still reaches every block). The output layer's BatchNorm stays unconditional (as in SNGAN and BigGAN).
  --g_conditioning=noise_and_embedding (BigGAN-deep): c = [z, e] [B, latent_dim + 128] is both the first Dense
  layer's input and what every conditional BatchNorm reads, so the class shapes the 4x4 start and z reaches every
  block.
Discriminator: resnet's discriminator features h [B, w]; logit = SN Dense 1(h) + <SN embed(y), h>, the projection,
  with embed a bias-free spectrally normalised Dense of the one-hot label: the same [K, w] matrix (and the same
  spectral norm) as SNGAN's SN EmbedID on int labels, fed with the one-hot labels the Gan interface passes.
  With --class_loss_weight > 0 D also has a class head, SN Dense K(h) (AC-GAN's auxiliary classifier on the same
  features; PD-GAN + AC as in StudioGAN): the output is [B, 1 + K], the logit then the class logits.
Parameters: resnet's, plus in G 128*K (embedding) and 2*128*c per conditional BatchNorm of width c (its own
  scale and offset gone: -2*c) (noise_and_embedding: 2*(latent_dim+128)*c, and 128 more inputs to the first Dense:
  +128*16*width(4)), and in D K*w (projection) and (w + 1)*K with the class head. Non-trainable:
  resnet's, plus one u per SN Dense.
Image shape and widths: as resnet (--image_size 32/64/128, --g_channels, --d_channels, --attention_resolution).
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, require_classes, resnet
from gan_dist.models.layers import FanOut, conditional_batch_norm, sn_dense

EMBEDDING_DIM = 128  # BigGAN's shared embedding size.


def make_generator(cfg, num_classes: int, shape) -> keras.Model:
  """[noise [B, latent_dim], one-hot [B, num_classes]] -> [B, H, W, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  onehot = keras.Input((num_classes,), name="onehot")
  embedding = layers.Dense(EMBEDDING_DIM, use_bias=False, name="class_embedding")(onehot)
  norms = 2 * len(resnet.up_resolutions(shape[0]))  # Two conditional BatchNorms per up block.
  # One copy per reader: see FanOut for why not the one tensor.
  if cfg.g_conditioning == "noise_and_embedding":
    first, *copies = FanOut(norms + 1)(layers.Concatenate(name="noise_and_class")([noise, embedding]))
  else:
    first, copies = noise, FanOut(norms)(embedding)
  copies = iter(copies)
  images = resnet.generator_body(cfg, first, shape, lambda x: conditional_batch_norm(cfg)([x, next(copies)]))
  assert next(copies, None) is None, "every copy of the embedding is read"
  return keras.Model([noise, onehot], images, name="generator")


def make_discriminator(cfg, num_classes: int, shape) -> keras.Model:
  """[images [B, H, W, C], one-hot [B, num_classes]] -> [B, 1] logits ([B, 1 + num_classes] with the class head)."""
  images = keras.Input(shape, name="images")
  onehot = keras.Input((num_classes,), name="onehot")
  features = resnet.discriminator_features(cfg, images)
  projection = layers.Dot(axes=1)([sn_dense(features.shape[-1], use_bias=False)(onehot), features])
  logits = layers.Add()([sn_dense(1)(features), projection])
  if cfg.class_loss_weight > 0:
    logits = layers.Concatenate()([logits, sn_dense(num_classes)(features)])
  return keras.Model([images, onehot], float32_logits(logits), name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  require_classes(cfg.arch, num_classes)  # Before the class embedding and projection, which need a class.
  shape = resnet.image_shape(cfg)
  return Gan(make_generator(cfg, num_classes, shape), make_discriminator(cfg, num_classes, shape),
             conditional=True, image_shape=shape, latent_dim=cfg.latent_dim, num_classes=num_classes,
             class_head=cfg.class_loss_weight > 0)
