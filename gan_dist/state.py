"""Everything a run holds: the models, both optimizers, the EMA generator and the step.

Built under the strategy's scope so that every variable is mirrored. The optimizers are built here, before any
step is traced: building them inside a distributed tf.function fails, and a checkpoint can only be restored into
optimizer slots that exist.

There is no random-number state to keep: the noise, fake labels and penalty interpolation of step s are stateless
functions of (--seed, s) (see `train_step.step_inputs`), so the checkpointed step decides them, whatever the
number of replicas. Dropout masks come from Keras SeedGenerators, whose states are checkpointed (`seed_states`).
"""

import dataclasses
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from gan_dist import models
from gan_dist import precision
from gan_dist.models import layers as gan_layers

# Noise vectors whose batch statistics become the EMA generator's BatchNorm moving statistics (see
# `TrainState.prepare_ema`): enough for stable statistics, small enough for a 64x64 generator on a CPU.
EMA_BATCHNORM_SAMPLES = 512
# ...run through the generator this many at a time: one pass of 512 128x128 images with self-attention at 64x64
# (configs/faces128.cfg) needed 19 GB; chunks of 64 keep the pass's memory that of a training batch.
EMA_BATCHNORM_CHUNK = 64


@dataclasses.dataclass
class TrainState:
  """The mutable state of a run; `checkpoint.make_checkpoint` saves all of it.

  Attributes:
    gan: the generator/discriminator pair.
    g_optimizer, d_optimizer: Adam, each wrapped in its own LossScaleOptimizer under mixed_float16.
    step: int64 scalar, generator steps done.
    seed: the run's --seed (fixes the noise used to re-estimate the EMA generator's BatchNorm statistics).
    ema_generator: a copy of the generator holding the EMA of its weights, or None.
    augment_p: float32 scalar, ADA's augmentation probability (--augment=ada), or None. One value on every replica
      and worker (assigned in cross-replica context from all-reduced statistics: `train_step`), checkpointed.
  """

  gan: models.Gan
  g_optimizer: keras.optimizers.Optimizer
  d_optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  seed: int
  ema_generator: Optional[keras.Model] = None
  augment_p: Optional[tf.Variable] = None
  _recalibrate: Optional[Callable[..., None]] = dataclasses.field(default=None, repr=False)

  @property
  def sampling_generator(self) -> keras.Model:
    """The generator that samples, evaluation and exports use: the EMA copy when there is one."""
    return self.ema_generator if self.ema_generator is not None else self.gan.generator

  def variables(self) -> list:
    """Every variable of the models, the EMA copy, both optimizers and ADA's p, each once (what a checkpoint holds)."""
    found, seen = [], set()
    models_ = [self.gan.generator, self.gan.discriminator] + ([self.ema_generator] if self.ema_generator else [])
    extra = [self.augment_p] if self.augment_p is not None else []
    for v in [w for m in models_ for w in m.weights] + self.g_optimizer.variables + self.d_optimizer.variables + extra:
      if id(v) not in seen:
        seen.add(id(v))
        found.append(v)
    return found

  def seed_states(self) -> list:
    """SeedGenerator states of the models' layers (dropout), which tf.train.Checkpoint does not track itself."""
    extra = [self.ema_generator] if self.ema_generator is not None else []
    return gan_layers.seed_states(self.gan.generator, self.gan.discriminator, *extra)

  def prepare_ema(self, force: bool = False) -> None:
    """Makes the EMA generator's BatchNorm moving statistics those of its own weights (before any use of it).

    The EMA averages G's trainable weights only. BatchNorm's moving statistics are not weights: copying G's (or
    averaging them) gives statistics of other weights than the averaged ones, and the EMA generator then draws
    washed-out or saturated images. Instead, each use (sample grids, evaluation, every checkpoint) first runs the EMA
    generator in training mode on EMA_BATCHNORM_SAMPLES fixed noise vectors, EMA_BATCHNORM_CHUNK at a time with
    momentum 0, and sets every moving mean and variance to the statistics of the union of the chunks (the mean of
    the chunk means; the mean of the chunk variances plus the variance of the chunk means) under exactly these
    weights: the "standing statistics" of BigGAN. Each chunk is normalised by its own statistics, as a training
    batch is. The noise is a function of --seed, so every worker computes the same statistics and a resumed run
    saves the same checkpoint as an uninterrupted one. Call it in cross-replica context (outside strategy.run).

    A step that samples, evaluates and checkpoints calls it up to four times with the same weights: the statistics
    are re-estimated only when the EMA weights differ from those of the last estimate (a checksum of them), unless
    `force`.

    Spectral normalisation: this training-mode pass leaves the EMA generator's power-iteration vectors u as they
    are (they are G's, copied at each EMA update: `train_step.update_ema`), so that the pass changes BatchNorm
    statistics only and a second call, forced or not, sets the same ones.

    Args:
      force: re-estimate even when the weights are those of the last estimate.
    """
    if self.ema_generator is not None:
      self._recalibration()(force)

  def ema_restored(self) -> None:
    """Records that the EMA generator's BatchNorm statistics are already those of its weights: they were restored
    from a checkpoint, and `checkpoint.Checkpointer` saves only after `prepare_ema`. Its next `prepare_ema` then
    re-estimates nothing until the weights change (loading a run for sampling, export or serving skips the
    EMA_BATCHNORM_SAMPLES forward passes: seconds on a CPU for a mixed-precision generator)."""
    if self.ema_generator is not None:
      self._recalibration()(assume_current=True)

  def _recalibration(self) -> Callable[..., None]:
    """The EMA generator's recalibration function, made on first use (it holds the checksum of its last estimate)."""
    if self._recalibrate is None:
      self._recalibrate = _make_recalibration(self.gan, self.ema_generator, self.seed)
    return self._recalibrate


def _make_recalibration(gan: models.Gan, generator: keras.Model, seed: int) -> Callable[..., None]:
  norms = [layer for layer in generator._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(layer, keras.layers.BatchNormalization)]
  if not norms:
    return lambda force=False, assume_current=False: None
  spectral = gan_layers.spectral_normalization_layers(generator)
  noise = tf.random.stateless_normal([EMA_BATCHNORM_SAMPLES, gan.latent_dim], seed=[seed, 0x5EED])
  labels = tf.random.stateless_uniform([EMA_BATCHNORM_SAMPLES], seed=[seed, 0x1AB], minval=0,
                                       maxval=max(gan.num_classes, 1), dtype=tf.int32)

  @tf.function(autograph=False)
  def forward(z, y):
    gan.generate(z, y, training=True, generator=generator)

  @tf.function(autograph=False)
  def checksum():
    # Sums and sums of squares in float64: any update of the weights changes them (EMA updates move every weight).
    parts = [tf.cast(v.value, tf.float64) for v in generator.trainable_variables]
    return tf.stack([tf.add_n([tf.reduce_sum(p) for p in parts]), tf.add_n([tf.reduce_sum(p * p) for p in parts])])

  last = []  # The checksum of the weights the statistics were last estimated for.

  def recalibrate(force=False, assume_current=False):
    current = checksum().numpy()
    if assume_current:
      last[:] = [current]
      return
    if not force and last and (last[0] == current).all():
      return
    # Keras' BatchNormalization reads `momentum` when it is traced, SpectralNormalization `power_iterations`: the
    # function above is traced (once) with 0 (statistics of this batch only; u not updated).
    momenta = [layer.momentum for layer in norms]
    iterations = [layer.power_iterations for layer in spectral]
    for layer in norms:
      layer.momentum = 0.0
    for layer in spectral:
      layer.power_iterations = 0
    sums = [[np.zeros(layer.moving_mean.shape, np.float64) for _ in range(2)] for layer in norms]
    chunks = range(0, EMA_BATCHNORM_SAMPLES, EMA_BATCHNORM_CHUNK)
    try:
      for start in chunks:
        forward(noise[start:start + EMA_BATCHNORM_CHUNK], labels[start:start + EMA_BATCHNORM_CHUNK])
        for (total, total_sq), layer in zip(sums, norms):
          mean = np.asarray(layer.moving_mean.numpy(), np.float64)
          total += mean
          total_sq += np.asarray(layer.moving_variance.numpy(), np.float64) + mean * mean
      for (total, total_sq), layer in zip(sums, norms):
        mean = total / len(chunks)
        # BatchNorm's statistics are float32 variables under every precision policy.
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / len(chunks) - mean * mean, 0.0).astype(np.float32))
    finally:
      for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
      for layer, n in zip(spectral, iterations):
        layer.power_iterations = n
    last[:] = [current]

  return recalibrate


def create_state(cfg, strategy: tf.distribute.Strategy, num_classes: int = 0) -> TrainState:
  """Builds models, optimizers, EMA and step under `strategy.scope()` and the run's dtype policy."""
  keras.utils.set_random_seed(cfg.seed)  # Initial weights are a function of --seed.
  with strategy.scope(), precision.policy_scope(cfg.precision):
    gan = models.build(cfg, num_classes)
    g_optimizer = precision.make_optimizer(cfg, cfg.g_lr)
    d_optimizer = precision.make_optimizer(cfg, cfg.d_lr)
    g_optimizer.build(gan.generator.trainable_variables)
    d_optimizer.build(gan.discriminator.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    ema_generator = None
    if cfg.ema_decay > 0:
      ema_generator = keras.models.clone_model(gan.generator)
      ema_generator.set_weights(gan.generator.get_weights())
    augment_p = None
    if cfg.augment == "ada":
      augment_p = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="augment_p",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
  return TrainState(gan, g_optimizer, d_optimizer, step, seed=cfg.seed, ema_generator=ema_generator,
                    augment_p=augment_p)
