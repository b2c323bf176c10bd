"""The distributed train step: the only place that reduces losses, scales them for float16 and calls strategy.run.

One generator step on a replica:
  * `d_steps_per_g - 1` discriminator-only updates, each on a new batch;
  * then, on one more batch, one forward pass of G and D recorded by two tapes, and both networks updated from it
    (the TF-tutorial DCGAN's step; with d_steps_per_g = 1 it is exactly that step).
Per-example losses are reduced with `tf.nn.compute_average_loss(global_batch_size=...)`: each replica's loss is
its share of the global mean, and the optimizers sum gradients over replicas, so the update equals one-device
training on the global batch.

Randomness is a stateless function of (--seed, step): the noise, fake labels and penalty interpolation weights of
step s are drawn for the whole global batch and each replica takes its rows, exactly as it takes its rows of the
data. A step therefore draws the same numbers on one device as on 8 GPUs or 4 workers, and a resumed run draws what
an uninterrupted one would, with no random state to checkpoint. (Dropout masks stay per replica: see
models/layers.py.)

A call runs `num_steps` steps inside one tf.function with no host round trip. Each replica accumulates its metrics
locally; after the steps, one all-reduce of a single vector carries every metric, the count of non-finite losses,
whether any weight became non-finite, and the workers' votes to stop (a SIGTERM seen by any of them), so that all
workers take the same decision after the same step.
"""

import dataclasses
from typing import Callable, Dict

from absl import logging
import tensorflow as tf

from gan_dist import losses
from gan_dist import precision

# Metric names in the order they are logged.
BASE_METRICS = ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "d_real_output", "d_fake_output")

# Stateless streams of a step, folded into (seed, step) so that they never share numbers.
_NOISE, _FAKE_LABELS, _ALPHA = 1, 2, 3


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
  from gan_dist import errors  # pylint: disable=g-import-not-at-top
  if not cfg.jit_compile or isinstance(strategy, tf.distribute.OneDeviceStrategy):
    return
  devices = strategy.extended.worker_devices
  on_gpus = all("GPU" in (tf.DeviceSpec.from_string(d).device_type or "").upper() for d in devices)
  if cfg.sync_batchnorm and not on_gpus and strategy.num_replicas_in_sync > 1:
    raise errors.UserError(
        f"--jit_compile with --strategy={cfg.strategy} on CPU devices needs --nosync_batchnorm: synchronised "
        "BatchNormalization all-reduces inside the compiled forward pass, and on CPUs tf.distribute does that "
        "with merge_call, which XLA cannot compile. Use --nosync_batchnorm, --strategy=one_device, or drop "
        "--jit_compile.")


def step_seed(seed: int, step: tf.Tensor, draw, stream: int) -> tf.Tensor:
  """The stateless seed (int64 [2]) of one random stream of one batch draw of a step."""
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
  return tf.random.experimental.stateless_fold_in(
      tf.random.experimental.stateless_fold_in(base, tf.cast(draw, tf.int64)), stream)


def replica_rows(global_values: tf.Tensor) -> tf.Tensor:
  """This replica's rows of a tensor of the global batch: replica r of n takes rows [r*B/n, (r+1)*B/n)."""
  ctx = tf.distribute.get_replica_context()
  n = ctx.num_replicas_in_sync if ctx is not None else 1
  if n == 1:
    return global_values
  rows = global_values.shape[0] // n
  start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * rows
  return global_values[start:start + rows]


@dataclasses.dataclass
class ChunkResult:
  """What one call of the train step reports, identical on every worker.

  Attributes:
    steps: generator steps run by the call.
    sums: per metric, the sum over the steps of its global-batch value (divide by `steps` for the mean).
    nonfinite_losses: how many (replica, step) pairs had a non-finite D or G loss (0 on a healthy run).
    nonfinite_weights: whether any replica's G, D or EMA weights are non-finite after the steps.
    stop: whether any worker asked to stop (it got SIGTERM or SIGINT before the call ended).
  """

  steps: int
  sums: Dict[str, float]
  nonfinite_losses: int
  nonfinite_weights: bool
  stop: bool

  @property
  def diverged(self) -> bool:
    return self.nonfinite_losses > 0 or self.nonfinite_weights

  def means(self) -> Dict[str, float]:
    return {name: total / max(self.steps, 1) for name, total in self.sums.items()}


class TrainStep:
  """`train(iterator, num_steps, stop) -> ChunkResult`: runs `num_steps` generator steps on every replica.

  Args (of the constructor, see `make_train_step`):
    cfg: the Config.
    strategy: the strategy whose scope built `state`.
    state: a `TrainState`.

  The call takes a distributed iterator (of `data.make_dataset_fn` batches), the number of steps (a Python int or an
  int32 scalar tensor; one traced function serves every chunk length) and a callable returning this worker's vote
  to stop, asked after the steps ran.
  """

  def __init__(self, cfg, strategy: tf.distribute.Strategy, state):
    check_jit_supported(cfg, strategy)
    self.names = metric_names(cfg)
    self._strategy = strategy
    self._state = state
    self._run_steps = self._make_run_steps(cfg, strategy, state)
    with strategy.scope():
      # Per-replica sums of [metrics..., non-finite losses], read and reset once per call.
      self._totals = tf.Variable(tf.zeros([len(self.names) + 1]), trainable=False, name="chunk_totals",
                                 synchronization=tf.VariableSynchronization.ON_READ,
                                 aggregation=tf.VariableAggregation.SUM)
    self._finish = self._make_finish(state)
    logging.info("Train step: loss=%s, d_steps_per_g=%d, precision=%s, jit_compile=%s, %d replica(s), global batch %d",
                 cfg.loss, cfg.d_steps_per_g, cfg.precision, cfg.jit_compile, strategy.num_replicas_in_sync,
                 cfg.batch_size)

  def __call__(self, iterator, num_steps, stop: Callable[[], bool] = lambda: False) -> ChunkResult:
    steps = int(num_steps)
    self._run_steps(iterator, tf.constant(steps, tf.int32))
    # Asked only now: Python runs a signal handler when the steps return, so a SIGTERM that arrived during them
    # is this chunk's vote. The only host synchronisation of a call: one all-reduced vector leaves the device.
    vector = self._finish(tf.constant(1.0 if stop() else 0.0)).numpy()
    k = len(self.names)
    return ChunkResult(steps=steps, sums=dict(zip(self.names, vector[:k].astype(float).tolist())),
                       nonfinite_losses=int(round(vector[k])), nonfinite_weights=bool(vector[k + 1] > 0),
                       stop=bool(vector[k + 2] > 0))

  def _make_finish(self, state):
    strategy = self._strategy
    watched = list(state.gan.generator.trainable_variables) + list(state.gan.discriminator.trainable_variables)
    if state.ema_generator is not None:
      watched += list(state.ema_generator.trainable_variables)

    def local_vector(stop):
      totals = self._totals.read_value()  # Replica context: this replica's own sums.
      self._totals.assign(tf.zeros_like(totals))
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in watched])
      return tf.concat([totals, [1.0 - tf.cast(finite, tf.float32), stop]], axis=0)

    @tf.function
    def finish(stop):
      return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(local_vector, args=(stop,)), axis=None)

    return finish

  def _make_run_steps(self, cfg, strategy, state):
    gan = state.gan
    generator, discriminator = gan.generator, gan.discriminator
    loss_fn = losses.get(cfg.loss)
    global_batch = cfg.batch_size
    names = self.names

    def mean(per_example):
      return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)

    def step_inputs(step, draw):
      """This replica's noise [b, latent_dim], fake labels [b] (None if unconditional) and GP weights [b, 1, 1, 1]."""
      noise = tf.random.stateless_normal([global_batch, gan.latent_dim], seed=step_seed(cfg.seed, step, draw, _NOISE))
      labels = None
      if gan.conditional:
        labels = replica_rows(tf.random.stateless_uniform(
            [global_batch], seed=step_seed(cfg.seed, step, draw, _FAKE_LABELS), minval=0, maxval=gan.num_classes,
            dtype=tf.int32))
      alpha = None
      if cfg.gp_weight > 0:
        alpha = replica_rows(tf.random.stateless_uniform([global_batch, 1, 1, 1],
                                                         seed=step_seed(cfg.seed, step, draw, _ALPHA)))
      return replica_rows(noise), labels, alpha

    def d_of(labels):
      """Discriminator as a function of images, with labels bound (for the penalties' gradients)."""
      return lambda images: gan.discriminate(images, labels, training=True)

    def objective(real, real_labels, fake, alpha, metrics):
      """Per-replica shares of the global-mean D and G losses, with D's penalties; records metrics."""
      real_logits = gan.discriminate(real, real_labels, training=True)
      fake_logits = gan.discriminate(fake["images"], fake["labels"], training=True)
      d_vec, g_vec = loss_fn(real_logits, fake_logits)
      if cfg.gp_weight > 0:
        # Interpolates take the real labels: the penalty is on D's input space, one label per pair.
        gp = losses.gradient_penalty(d_of(real_labels), real, fake["images"], alpha)
        metrics["gradient_penalty"] = mean(gp)
        d_vec += cfg.gp_weight * gp
      if cfg.r1_weight > 0:
        r1 = losses.r1_penalty(d_of(real_labels), real)
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

    def forward(batch, step, draw, metrics):
      noise, fake_labels, alpha = step_inputs(step, draw)
      fake = {"images": gan.generate(noise, fake_labels, training=True), "labels": fake_labels}
      real_labels = batch["labels"] if gan.conditional else None
      return objective(batch["images"], real_labels, fake, alpha, metrics)

    def d_grads(batch, step, draw):
      """An extra discriminator update's gradients (--d_steps_per_g > 1); its metrics are not reported."""
      with tf.GradientTape() as d_tape:
        d_loss, _ = forward(batch, step, draw, {})
        d_loss = precision.scale_loss(state.d_optimizer, d_loss)
      return d_tape.gradient(d_loss, discriminator.trainable_variables)

    def gd_grads(batch, step, draw):
      """The tutorial step's forward pass and both networks' gradients; returns (g_grads, d_grads, metrics)."""
      metrics = {}
      with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        d_loss, g_loss = forward(batch, step, draw, metrics)
        g_loss = precision.scale_loss(state.g_optimizer, g_loss)
        d_loss = precision.scale_loss(state.d_optimizer, d_loss)
      g_grads = g_tape.gradient(g_loss, generator.trainable_variables)
      d_grads_ = d_tape.gradient(d_loss, discriminator.trainable_variables)
      return g_grads, d_grads_, [metrics[name] for name in names]

    if cfg.jit_compile:
      # XLA compiles the per-replica forward and backward pass, nearly all of the work. The updates stay outside:
      # they all-reduce gradients and LossScaleOptimizer merges replicas in a cond, which XLA cannot hold on CPUs.
      d_grads = tf.function(d_grads, jit_compile=True)
      gd_grads = tf.function(gd_grads, jit_compile=True)

    def replica_step(batches, step):
      for draw, batch in enumerate(batches[:-1]):  # Extra discriminator updates (--d_steps_per_g > 1).
        precision.apply_gradients(state.d_optimizer, d_grads(batch, step, draw),
                                  discriminator.trainable_variables)
      g_grads, d_grads_, values = gd_grads(batches[-1], step, len(batches) - 1)
      precision.apply_gradients(state.g_optimizer, g_grads, generator.trainable_variables)
      precision.apply_gradients(state.d_optimizer, d_grads_, discriminator.trainable_variables)
      finite = tf.logical_and(tf.math.is_finite(values[0]), tf.math.is_finite(values[1]))
      self._totals.assign_add(tf.stack(values + [1.0 - tf.cast(finite, tf.float32)]))

    ema = state.ema_generator
    decay = cfg.ema_decay

    def update_ema():
      # Warm-up: an average over the steps so far while there are few of them (TF's ExponentialMovingAverage with
      # num_updates), so that early EMA samples are not dominated by the initial weights. t = this update's number.
      updates = tf.cast(state.step, tf.float32)
      rate = tf.minimum(decay, (1.0 + updates) / (10.0 + updates))
      # Cross-replica context: G's weights are identical on all replicas, assignments reach every copy. Only the
      # trainable weights are averaged; BatchNorm statistics are recomputed for the EMA weights when they are used
      # (TrainState.prepare_ema).
      for ema_var, var in zip(ema.trainable_variables, generator.trainable_variables):
        ema_var.assign(rate * ema_var + (1.0 - rate) * var)

    @tf.function
    def run_steps(iterator, num_steps):
      for _ in tf.range(num_steps):
        batches = tuple(next(iterator) for _ in range(cfg.d_steps_per_g))
        strategy.run(replica_step, args=(batches, state.step.read_value()))
        state.step.assign_add(1)
        precision.count_attempt(state.g_optimizer)
        precision.count_attempt(state.d_optimizer, cfg.d_steps_per_g)
        if ema is not None:
          update_ema()

    return run_steps


def make_train_step(cfg, strategy: tf.distribute.Strategy, state) -> TrainStep:
  """Returns the run's `TrainStep` (see its docstring)."""
  return TrainStep(cfg, strategy, state)
