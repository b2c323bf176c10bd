"""The distributed train step: the only place that reduces losses, scales them for float16 and calls strategy.run.

One generator step on a replica:
  * `d_steps_per_g - 1` discriminator-only updates, each on a new batch;
  * then, on one more batch, one forward pass of G and D recorded by two tapes, and both networks updated from it
    (the TF-tutorial DCGAN's step; with d_steps_per_g = 1 it is exactly that step).
Per-example losses are reduced with `tf.nn.compute_average_loss(global_batch_size=...)`: each replica's loss is
its share of the global mean, and the optimizers sum gradients over replicas, so the update equals one-device
training on the global batch.
"""

from typing import Callable, Dict

from absl import logging
import keras
import tensorflow as tf

from gan_dist import losses

# Metric names in the order they are logged.
BASE_METRICS = ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "d_real_output", "d_fake_output")


def is_float16(cfg) -> bool:
  return cfg.precision == "mixed_float16"


def metric_names(cfg) -> tuple:
  names = BASE_METRICS
  if cfg.gp_weight > 0:
    names += ("gradient_penalty",)
  if cfg.r1_weight > 0:
    names += ("r1_penalty",)
  return names


def check_jit_supported(cfg, strategy: tf.distribute.Strategy) -> None:
  """Raises ValueError for XLA combinations TensorFlow cannot run, before anything is traced.

  jit_compile + MirroredStrategy/MultiWorkerMirroredStrategy + mixed_float16 + LossScaleOptimizer crashes inside
  TensorFlow (the loss scale's cross-replica update is not compilable), so it is refused up front.
  """
  if not cfg.jit_compile:
    return
  if is_float16(cfg) and not isinstance(strategy, tf.distribute.OneDeviceStrategy):
    raise ValueError("--jit_compile with --precision=mixed_float16 is not supported under --strategy="
                     f"{cfg.strategy}: TensorFlow cannot compile LossScaleOptimizer's cross-replica update. Use "
                     "--strategy=one_device, or --precision=mixed_bfloat16 (no loss scaling), or drop --jit_compile.")


def loss_scales(state) -> Dict[str, tf.Tensor]:
  """The current float16 loss scale of each optimizer (empty unless mixed_float16)."""
  out = {}
  for name, opt in (("g", state.g_optimizer), ("d", state.d_optimizer)):
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
      out[f"loss_scale/{name}"] = tf.identity(opt.dynamic_scale)
  return out


def skipped_steps(state) -> Dict[str, tf.Tensor]:
  """Updates skipped for non-finite gradients, per optimizer: outer iterations minus applied inner iterations."""
  out = {}
  for name, opt in (("g", state.g_optimizer), ("d", state.d_optimizer)):
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
      out[f"skipped_steps/{name}"] = tf.cast(opt.iterations - opt.inner_optimizer.iterations, tf.int64)
  return out


def make_train_step(cfg, strategy: tf.distribute.Strategy, state) -> Callable:
  """Returns `train(iterator, num_steps) -> metrics`, a tf.function running `num_steps` generator steps.

  Args:
    cfg: the Config.
    strategy: the strategy whose scope built `state`.
    state: a `TrainState`.

  Returns:
    A tf.function taking a distributed iterator (of `data.make_dataset_fn` batches) and an int32 scalar tensor
    `num_steps` (a tensor, so that a shorter last chunk does not retrace). It returns a dict of float32 scalars:
    the metrics of `metric_names(cfg)`, each the mean over the `num_steps` steps of the global-batch value.
  """
  check_jit_supported(cfg, strategy)
  gan = state.gan
  generator, discriminator = gan.generator, gan.discriminator
  loss_fn = losses.get(cfg.loss)
  global_batch = cfg.batch_size
  float16 = is_float16(cfg)
  names = metric_names(cfg)

  def mean(per_example):
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)

  def sample_inputs(batch_size):
    """Noise [b, latent_dim] and one-hot labels [b, num_classes] (None if unconditional) for G."""
    noise = state.rng.normal([batch_size, gan.latent_dim])
    if not gan.conditional:
      return noise, None
    labels = state.rng.uniform([batch_size], 0, gan.num_classes, dtype=tf.int32)
    return noise, tf.one_hot(labels, gan.num_classes)

  def g_call(noise, onehot):
    return generator([noise, onehot] if gan.conditional else noise, training=True)

  def d_fn(onehot):
    """Discriminator as a function of images, with labels bound (conditional models)."""
    if gan.conditional:
      return lambda images: discriminator([images, onehot], training=True)
    return lambda images: discriminator(images, training=True)

  def d_objective(real, real_onehot, fake, real_logits, fake_logits, metrics):
    """Per-replica shares of the global-mean D and G losses, with D's penalties; records metrics."""
    d_vec, g_vec = loss_fn(real_logits, fake_logits)
    if cfg.gp_weight > 0:
      alpha = state.rng.uniform([tf.shape(real)[0], 1, 1, 1])
      # Interpolates take the real labels: the penalty is on D's input space, one label per pair.
      gp = losses.gradient_penalty(d_fn(real_onehot), real, fake, alpha)
      metrics["gradient_penalty"] = mean(gp)
      d_vec += cfg.gp_weight * gp
    if cfg.r1_weight > 0:
      r1 = losses.r1_penalty(d_fn(real_onehot), real)
      metrics["r1_penalty"] = mean(r1)
      d_vec += 0.5 * cfg.r1_weight * r1
    real_flat = tf.reshape(real_logits, [-1])
    fake_flat = tf.reshape(fake_logits, [-1])
    metrics["d_loss"] = mean(d_vec)
    metrics["g_loss"] = mean(g_vec)
    metrics["d_real_accuracy"] = mean(tf.cast(real_flat > 0, tf.float32))
    metrics["d_fake_accuracy"] = mean(tf.cast(fake_flat < 0, tf.float32))
    metrics["d_real_output"] = mean(tf.sigmoid(real_flat))
    metrics["d_fake_output"] = mean(tf.sigmoid(fake_flat))
    return metrics["d_loss"], metrics["g_loss"]

  def forward(batch, metrics):
    real = batch["images"]
    batch_size = tf.shape(real)[0]
    noise, fake_onehot = sample_inputs(batch_size)
    fake = g_call(noise, fake_onehot)
    real_onehot = tf.one_hot(batch["labels"], gan.num_classes) if gan.conditional else None
    real_logits = d_fn(real_onehot)(real)
    fake_logits = d_fn(fake_onehot)(fake)
    return d_objective(real, real_onehot, fake, real_logits, fake_logits, metrics)

  def apply(optimizer, tape, loss, variables):
    scaled = optimizer.scale_loss(loss) if float16 else loss
    grads = tape.gradient(scaled, variables)
    optimizer.apply_gradients(zip(grads, variables))

  def replica_step(batches):
    metrics = {}
    for batch in batches[:-1]:  # Extra discriminator updates (--d_steps_per_g > 1).
      with tf.GradientTape() as d_tape:
        d_loss, _ = forward(batch, metrics)
      apply(state.d_optimizer, d_tape, d_loss, discriminator.trainable_variables)
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
      d_loss, g_loss = forward(batches[-1], metrics)
    apply(state.g_optimizer, g_tape, g_loss, generator.trainable_variables)
    apply(state.d_optimizer, d_tape, d_loss, discriminator.trainable_variables)
    return {name: metrics[name] for name in names}

  if cfg.jit_compile:
    replica_step = tf.function(replica_step, jit_compile=True)

  ema = state.ema_generator
  decay = cfg.ema_decay

  def update_ema():
    # Cross-replica context: G's weights are identical on all replicas, assignments reach every copy.
    for ema_var, var in zip(ema.trainable_variables, generator.trainable_variables):
      ema_var.assign(decay * ema_var + (1.0 - decay) * var)
    for ema_var, var in zip(ema.non_trainable_variables, generator.non_trainable_variables):
      ema_var.assign(var)  # BatchNorm statistics and seeds follow G.

  @tf.function
  def train(iterator, num_steps):
    totals = {name: tf.constant(0.0) for name in names}
    for _ in tf.range(num_steps):
      batches = tuple(next(iterator) for _ in range(cfg.d_steps_per_g))
      per_replica = strategy.run(replica_step, args=(batches,))
      # Reassigned (not mutated) so that autograph carries the totals through the while loop.
      totals = {name: totals[name] + strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[name], axis=None)
                for name in names}
      state.step.assign_add(1)
      if ema is not None:
        update_ema()
    steps = tf.cast(num_steps, tf.float32)
    return {name: total / steps for name, total in totals.items()}

  logging.info("Train step: loss=%s, d_steps_per_g=%d, precision=%s, jit_compile=%s, %d replica(s), global batch %d",
               cfg.loss, cfg.d_steps_per_g, cfg.precision, cfg.jit_compile, strategy.num_replicas_in_sync,
               global_batch)
  return train
