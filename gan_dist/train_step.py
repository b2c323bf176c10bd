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

  XLA compiles each replica's forward and backward pass (`make_train_step`); the optimizer updates, which
  synchronise replicas, stay outside the compiled function. What that leaves unsupported:
    * MirroredStrategy/MultiWorkerMirroredStrategy on CPU devices with --sync_batchnorm: synchronised
      BatchNormalization all-reduces inside the forward pass, and on non-GPU devices tf.distribute implements a
      replica-context all-reduce with merge_call, which a compiled function cannot contain (it fails at run time
      with "Trying to access resource ... located in device CPU:1 from device CPU:0").

  Args:
    cfg: the Config (jit_compile, precision, strategy, sync_batchnorm).
    strategy: the strategy the step will run under.

  Raises:
    ValueError: the combination is known not to compile; the message says what to change.
  """
  if not cfg.jit_compile or isinstance(strategy, tf.distribute.OneDeviceStrategy):
    return
  devices = strategy.extended.worker_devices
  on_gpus = all("GPU" in (tf.DeviceSpec.from_string(d).device_type or "").upper() for d in devices)
  if cfg.sync_batchnorm and not on_gpus and strategy.num_replicas_in_sync > 1:
    raise ValueError(
        f"--jit_compile with --strategy={cfg.strategy} on CPU devices needs --nosync_batchnorm: synchronised "
        "BatchNormalization all-reduces inside the compiled forward pass, and on CPUs tf.distribute does that "
        "with merge_call, which XLA cannot compile. Use --nosync_batchnorm, --strategy=one_device, or drop "
        "--jit_compile.")


def _lso(optimizer):
  return optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None


def loss_scales(state) -> Dict[str, tf.Tensor]:
  """The current float16 loss scale of each optimizer (empty unless mixed_float16).

  Returns:
    {"loss_scale/g": float32 scalar, "loss_scale/d": float32 scalar}, or {}.
  """
  out = {}
  for name, opt in (("g", state.g_optimizer), ("d", state.d_optimizer)):
    if _lso(opt) is not None:
      out[f"loss_scale/{name}"] = tf.identity(opt.dynamic_scale)
  return out


def attempted_updates(optimizer) -> tf.Variable:
  """The counter of updates the train step asked `optimizer` (a LossScaleOptimizer) to make, skipped or not.

  Keras 3's LossScaleOptimizer creates its own `iterations` variable but never increments it (its `iterations`
  property returns the inner optimizer's, which counts applied updates only). The train step increments it once
  per attempted update, so it is checkpointed with the optimizer, and attempted - applied = skipped.
  """
  return optimizer._iterations  # pylint: disable=protected-access


def skipped_steps(state) -> Dict[str, tf.Tensor]:
  """Updates skipped for non-finite gradients, per optimizer (empty unless mixed_float16).

  Returns:
    {"skipped_steps/g": int64 scalar, "skipped_steps/d": int64 scalar}, or {}: attempted minus applied updates.
  """
  out = {}
  for name, opt in (("g", state.g_optimizer), ("d", state.d_optimizer)):
    if _lso(opt) is not None:
      out[f"skipped_steps/{name}"] = tf.cast(attempted_updates(opt) - opt.inner_optimizer.iterations, tf.int64)
  return out


def _agree_on_finite(grads: list) -> list:
  """Makes every replica see non-finite gradients if any replica has them (float16, several replicas).

  LossScaleOptimizer decides to skip an update from the local gradients, before they are all-reduced; Keras takes
  replica 0's decision under merge_call (so a NaN on replica 1 would be applied to everyone), and a strategy
  without merge_call would let replicas disagree and hang in the all-reduce of the update. One scalar all-reduce
  of "is anything non-finite here" makes them agree: a NaN added to one gradient poisons the local check of every
  replica when any replica overflowed, so all of them skip and halve the scale together.

  Args:
    grads: the local (scaled) gradients, a list of tensors or None.

  Returns:
    The same list, the first gradient NaN everywhere if any replica's gradients were non-finite.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return grads
  present = [i for i, g in enumerate(grads) if g is not None]
  local_bad = tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(grads[i])) for i in present]))
  any_bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(local_bad, tf.float32)) > 0
  first = present[0]
  grads = list(grads)
  grads[first] = grads[first] + tf.cast(tf.where(any_bad, float("nan"), 0.0), grads[first].dtype)
  return grads


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

  def scaled(optimizer, loss):
    # float16: scale inside the tape (a product outside it is not recorded and every gradient would be None), so
    # that small gradients survive float16; LossScaleOptimizer.apply_gradients unscales them.
    return optimizer.scale_loss(loss) if float16 else loss

  def d_grads(batch):
    """An extra discriminator update's gradients (--d_steps_per_g > 1); its metrics are not reported."""
    with tf.GradientTape() as d_tape:
      d_loss, _ = forward(batch, {})
      d_loss = scaled(state.d_optimizer, d_loss)
    return d_tape.gradient(d_loss, discriminator.trainable_variables)

  def gd_grads(batch):
    """The tutorial step's forward pass and both networks' gradients; returns (g_grads, d_grads, metrics)."""
    metrics = {}
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
      d_loss, g_loss = forward(batch, metrics)
      g_loss, d_loss = scaled(state.g_optimizer, g_loss), scaled(state.d_optimizer, d_loss)
    g_grads = g_tape.gradient(g_loss, generator.trainable_variables)
    d_grads_ = d_tape.gradient(d_loss, discriminator.trainable_variables)
    return g_grads, d_grads_, {name: metrics[name] for name in names}

  if cfg.jit_compile:
    # XLA compiles the per-replica forward and backward pass, nearly all of the work. The updates stay outside:
    # they all-reduce gradients and LossScaleOptimizer merges replicas in a cond, which XLA cannot hold on CPUs.
    d_grads = tf.function(d_grads, jit_compile=True)
    gd_grads = tf.function(gd_grads, jit_compile=True)

  def apply(optimizer, grads, variables):
    if float16:
      grads = _agree_on_finite(grads)
    optimizer.apply_gradients(zip(grads, variables))

  def replica_step(batches):
    for batch in batches[:-1]:  # Extra discriminator updates (--d_steps_per_g > 1).
      apply(state.d_optimizer, d_grads(batch), discriminator.trainable_variables)
    g_grads, d_grads_, metrics = gd_grads(batches[-1])
    apply(state.g_optimizer, g_grads, generator.trainable_variables)
    apply(state.d_optimizer, d_grads_, discriminator.trainable_variables)
    return metrics

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
      if float16:  # Attempted updates, so that skipped_steps = attempted - applied.
        attempted_updates(state.g_optimizer).assign_add(1)
        attempted_updates(state.d_optimizer).assign_add(cfg.d_steps_per_g)
      if ema is not None:
        update_ema()
    steps = tf.cast(num_steps, tf.float32)
    return {name: total / steps for name, total in totals.items()}

  logging.info("Train step: loss=%s, d_steps_per_g=%d, precision=%s, jit_compile=%s, %d replica(s), global batch %d",
               cfg.loss, cfg.d_steps_per_g, cfg.precision, cfg.jit_compile, strategy.num_replicas_in_sync,
               global_batch)
  return train
