"""Everything a run holds: the models, both optimizers, the EMA generator, the RNG and the step.

Built under the strategy's scope so that every variable is mirrored. The optimizers are built here, before any
step is traced: building them inside a distributed tf.function fails, and a checkpoint can only be restored into
optimizer slots that exist.
"""

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from gan_dist import models
from gan_dist.models import layers as gan_layers


@dataclasses.dataclass
class TrainState:
  """The mutable state of a run; `checkpoint.make_checkpoint` saves all of it.

  Attributes:
    gan: the generator/discriminator pair.
    g_optimizer, d_optimizer: Adam, each wrapped in its own LossScaleOptimizer under mixed_float16.
    step: int64 scalar, generator steps done.
    rng: tf.random.Generator for noise, labels and penalty interpolation; a replica folds in its id, so every
      replica draws different numbers and the stream resumes exactly from a checkpoint.
    ema_generator: a copy of the generator holding the EMA of its weights, or None.
  """

  gan: models.Gan
  g_optimizer: keras.optimizers.Optimizer
  d_optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  rng: tf.random.Generator
  ema_generator: Optional[keras.Model] = None

  @property
  def sampling_generator(self) -> keras.Model:
    """The generator that samples and exports use: the EMA copy when there is one."""
    return self.ema_generator if self.ema_generator is not None else self.gan.generator

  def seed_states(self) -> list:
    """SeedGenerator states of the models' layers (dropout), which tf.train.Checkpoint does not track itself."""
    extra = [self.ema_generator] if self.ema_generator is not None else []
    return gan_layers.seed_states(self.gan.generator, self.gan.discriminator, *extra)


def set_precision(precision: str) -> None:
  """Sets the global Keras dtype policy used by layers built afterwards."""
  keras.mixed_precision.set_dtype_policy(precision)


def make_optimizer(cfg, learning_rate: float) -> keras.optimizers.Optimizer:
  optimizer = keras.optimizers.Adam(learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2)
  if cfg.precision == "mixed_float16":
    # One LossScaleOptimizer per network: G's and D's gradients overflow at different scales.
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def create_state(cfg, strategy: tf.distribute.Strategy, num_classes: int = 0) -> TrainState:
  """Builds models, optimizers, EMA, RNG and step under `strategy.scope()`."""
  set_precision(cfg.precision)
  keras.utils.set_random_seed(cfg.seed)  # Initial weights are a function of --seed.
  with strategy.scope():
    gan = models.build(cfg, num_classes)
    g_optimizer = make_optimizer(cfg, cfg.g_lr)
    d_optimizer = make_optimizer(cfg, cfg.d_lr)
    g_optimizer.build(gan.generator.trainable_variables)
    d_optimizer.build(gan.discriminator.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    rng = tf.random.Generator.from_seed(cfg.seed + 1)
    ema_generator = None
    if cfg.ema_decay > 0:
      ema_generator = keras.models.clone_model(gan.generator)
      ema_generator.set_weights(gan.generator.get_weights())
  return TrainState(gan, g_optimizer, d_optimizer, step, rng, ema_generator)
