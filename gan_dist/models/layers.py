"""Layers shared by the architectures, where Keras' own do the wrong thing under tf.distribute."""

import keras
import tensorflow as tf


def replica_seed(seed: tf.Tensor) -> tf.Tensor:
  """Folds the global replica id into a stateless seed so that every replica draws different numbers.

  Args:
    seed: int tensor of shape [2], identical on every replica (e.g. from a mirrored SeedGenerator).

  Returns:
    int64 tensor of shape [2], different on every replica of a multi-replica step.
  """
  seed = tf.cast(seed, tf.int64)
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return seed
  replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
  return tf.random.experimental.stateless_fold_in(seed, replica_id)


class Dropout(keras.layers.Dropout):
  """Dropout whose mask differs between replicas.

  Keras 3 draws the mask from a SeedGenerator whose state is a mirrored variable, so under MirroredStrategy every
  replica would drop the same units for its slice of the batch. Folding the replica id into the seed restores
  independent masks, as on one device. The state still advances identically on every replica, so it stays
  mirrored and checkpointable (see `seed_states`).
  """

  def call(self, inputs, training=False):
    if not training or self.rate <= 0:
      return inputs
    seed = replica_seed(self.seed_generator.next())
    return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed, noise_shape=self.noise_shape)


def batch_norm(cfg, **kwargs) -> keras.layers.BatchNormalization:
  """BatchNormalization following --sync_batchnorm (global-batch statistics, identical on every replica)."""
  return keras.layers.BatchNormalization(synchronized=cfg.sync_batchnorm, **kwargs)


def seed_states(*models: keras.Model) -> list:
  """The SeedGenerator state variables of `models`' layers (e.g. Dropout).

  tf.train.Checkpoint does not track Keras SeedGenerators, so without these a resumed run would draw other dropout
  masks than an uninterrupted one.
  """
  states = []
  for model in models:
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
      gen = getattr(layer, "seed_generator", None)
      if gen is not None:
        states.append(gen.state)
  return states


def strided_conv_features(images, kernel_size: int, leaky_slope: float, dropout: float = 0.0,
                          filters=(64, 128)):
  """The DCGAN-style discriminator body: per filter count, Conv2D (stride 2, same) -> LeakyReLU [-> Dropout].

  Args:
    images: a Keras tensor [B, H, W, C].
    kernel_size: convolution kernel size.
    leaky_slope: LeakyReLU negative slope.
    dropout: Dropout rate after each block (0: none).
    filters: filters of each strided convolution.

  Returns:
    Flattened features [B, H / 2^len(filters) * W / 2^len(filters) * filters[-1]].
  """
  x = images
  for f in filters:
    x = keras.layers.Conv2D(f, kernel_size, strides=2, padding="same")(x)
    x = keras.layers.LeakyReLU(leaky_slope)(x)
    if dropout > 0:
      x = Dropout(dropout)(x)
  return keras.layers.Flatten()(x)
