"""The distributed train step: the only place that reduces losses and scales them for float16; it runs the replicas'
steps with strategy.run (as elsewhere only the evaluator's feature extraction and the workers' votes do).

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

Like every tf.function of gan_dist, the step is traced with autograph=False: its branches and loops are Python
decisions on the config, and the one graph loop is a `tf.while_loop`. A Python `if` on a tensor then fails at
tracing instead of becoming a silent `tf.cond`, and start-up skips autograph's source conversion (seconds of every
run's and every test's start: WORKSPACE.md "No autograph").
"""

import dataclasses
import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from gan_dist import augment
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import losses
from gan_dist import models
from gan_dist import precision
from gan_dist import state as state_lib
from gan_dist.models import layers as gan_layers

# Metric names in the order they are logged.
BASE_METRICS = ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "d_real_output", "d_fake_output")

# Stateless streams of a step, folded into (seed, step) so that they never share numbers.
_NOISE, _FAKE_LABELS, _ALPHA, _AUGMENT_REAL, _AUGMENT_FAKE = 1, 2, 3, 4, 5


def metric_names(cfg) -> tuple:
  names = BASE_METRICS
  if cfg.gp_weight > 0:
    names += ("gradient_penalty",)
  if cfg.r1_weight > 0:
    names += ("r1_penalty",)
  if cfg.class_loss_weight > 0:
    names += ("d_class_loss", "d_class_accuracy", "d_class_labelled", "g_class_loss", "g_class_accuracy")
  if cfg.mode_seeking_weight > 0:
    names += ("g_mode_seeking",)
  if cfg.augment == "ada":
    names += ("augment_p", "ada_rt")
  return names


def check_jit_supported(cfg, strategy: tf.distribute.Strategy, gan: Optional[models.Gan] = None) -> None:
  """Raises ValueError for XLA combinations TensorFlow cannot run, before anything is traced.

  XLA compiles each replica's forward and backward pass (`make_train_step`); the optimizer updates, which
  synchronise replicas, stay outside the compiled function. What that leaves unsupported:
    * MirroredStrategy/MultiWorkerMirroredStrategy on CPU devices with --sync_batchnorm: synchronised
      BatchNormalization all-reduces inside the forward pass, and on non-GPU devices tf.distribute implements a
      replica-context all-reduce with merge_call, which a compiled function cannot contain (it fails at run time
      with "Trying to access resource ... located in device CPU:1 from device CPU:0").
    * The same strategies on CPU devices with spectral normalisation (resnet, cresnet), for the same reason: its
      power-iteration vectors are averaged over the replicas inside the forward pass (models.layers).

  Args:
    cfg: the Config (jit_compile, precision, strategy, sync_batchnorm).
    strategy: the strategy the step will run under.
    gan: the models, when built (the check of spectral normalisation needs them).

  Raises:
    ValueError: the combination is known not to compile; the message says what to change.
  """
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
  if (gan is not None and not on_gpus and strategy.num_replicas_in_sync > 1
      and any(gan_layers.spectral_normalization_layers(m) for m in (gan.generator, gan.discriminator))):
    raise errors.UserError(
        f"--jit_compile with --strategy={cfg.strategy} on CPU devices cannot compile --arch={cfg.arch}: its "
        "spectral normalisation averages its power-iteration vectors over the replicas inside the forward pass, "
        "which tf.distribute does with merge_call on CPUs, which XLA cannot compile. Use --strategy=one_device, "
        "or drop --jit_compile.")


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
    return means(self.sums, self.steps)


def means(sums: Dict[str, float], steps: int) -> Dict[str, float]:
  """Per-step means of metric sums over `steps` steps. d_class_accuracy is over the real images that have a class
  (root images of a class folder tree, label -1, count in neither its hits nor its total): NaN if none had one."""
  result = {name: total / max(steps, 1) for name, total in sums.items()}
  if "d_class_labelled" in sums:
    labelled = sums["d_class_labelled"]
    result["d_class_accuracy"] = sums["d_class_accuracy"] / labelled if labelled > 0 else float("nan")
  return result


@dataclasses.dataclass
class StepInputs:
  """This replica's random inputs of one batch draw of a step (its rows of the global batch's draws).

  Attributes:
    noise: float32 [b, latent_dim].
    fake_labels: int32 [b], the classes G is asked for (zeros for unconditional models, which ignore them).
    alpha: float32 [b, 1, 1, 1] interpolation weights of the gradient penalty, or None without --gp_weight.
    real_seed, fake_seed: int64 [2], the stateless seeds of the augmentation of the real and of the generated batch
      (drawn for the global batch; `augment.apply` takes this replica's rows).
  """

  noise: tf.Tensor
  fake_labels: tf.Tensor
  alpha: Optional[tf.Tensor]
  real_seed: Optional[tf.Tensor] = None
  fake_seed: Optional[tf.Tensor] = None


def step_inputs(cfg: config_lib.Config, gan: models.Gan, step: tf.Tensor, draw: int) -> StepInputs:
  """Draws the noise, fake labels and penalty weights of batch draw `draw` of step `step` for the whole global
  batch from (--seed, step, draw), and returns this replica's rows."""
  batch = cfg.batch_size
  noise = tf.random.stateless_normal([batch, gan.latent_dim], seed=step_seed(cfg.seed, step, draw, _NOISE))
  pairs = cfg.mode_seeking_weight > 0  # Examples 2k and 2k+1 share a label: a pair never spans two replicas.
  fake_labels = tf.random.stateless_uniform([batch // 2 if pairs else batch],
                                            seed=step_seed(cfg.seed, step, draw, _FAKE_LABELS), minval=0,
                                            maxval=max(gan.num_classes, 1), dtype=tf.int32)
  if pairs:
    fake_labels = tf.repeat(fake_labels, 2)
  alpha = None
  if cfg.gp_weight > 0:
    alpha = replica_rows(tf.random.stateless_uniform([batch, 1, 1, 1], seed=step_seed(cfg.seed, step, draw, _ALPHA)))
  return StepInputs(replica_rows(noise), replica_rows(fake_labels), alpha,
                    step_seed(cfg.seed, step, draw, _AUGMENT_REAL), step_seed(cfg.seed, step, draw, _AUGMENT_FAKE))


@dataclasses.dataclass
class Forward:
  """One forward pass of a replica: G's images and D's logits on the real and the generated batch.

  Attributes:
    generated: G's images [b, H, W, C] before any augmentation.
    real_images, real_labels: D's real input, float32 [b, H, W, C] (the replica's data batch, augmented when
      augmentation is on: the penalties differentiate D at the images it saw), and its labels, int32 [b].
    fake_images: D's generated input [b, H, W, C]: G's images for `inputs`, augmented likewise.
    real_logits, fake_logits: float32 [b, 1].
    inputs: the StepInputs the fakes were made from.
    real_class_logits, fake_class_logits: float32 [b, K] from D's class head (the same pass), None without one.
  """

  real_images: tf.Tensor
  real_labels: tf.Tensor
  fake_images: tf.Tensor
  real_logits: tf.Tensor
  fake_logits: tf.Tensor
  inputs: StepInputs
  real_class_logits: Optional[tf.Tensor] = None
  fake_class_logits: Optional[tf.Tensor] = None
  generated: Optional[tf.Tensor] = None


Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def augmenter(cfg: config_lib.Config, state: state_lib.TrainState) -> Optional[Augmenter]:
  """(images, seed) -> the images D sees under --augment (p = 1 for diffaug, ADA's p), or None without it."""
  policy = config_lib.augment_policy(cfg)
  if not policy:
    return None
  p = state.augment_p if cfg.augment == "ada" else 1.0
  return lambda images, seed: augment.apply(images, policy, seed, p, cfg.batch_size, replica_rows)


def forward(gan: models.Gan, batch: Dict[str, tf.Tensor], inputs: StepInputs,
            augment_fn: Optional[Augmenter] = None) -> Forward:
  """G makes a batch from `inputs`; D scores it and the data batch (both in training mode), each augmented by
  `augment_fn` first when given (the generated batch in G's update too: G learns through the augmentation)."""
  generated = gan.generate(inputs.noise, inputs.fake_labels, training=True)
  real, fake = batch["images"], generated
  if augment_fn is not None:
    real, fake = augment_fn(real, inputs.real_seed), augment_fn(fake, inputs.fake_seed)
  real_logits, real_classes = gan.discriminate_with_classes(real, batch["labels"], training=True)
  fake_logits, fake_classes = gan.discriminate_with_classes(fake, inputs.fake_labels, training=True)
  return Forward(real, batch["labels"], fake, real_logits, fake_logits, inputs, real_classes, fake_classes,
                 generated)


def global_mean(cfg: config_lib.Config, per_example: tf.Tensor) -> tf.Tensor:
  """This replica's share of the mean over the global batch (the replicas' shares sum to the global mean)."""
  return tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)


def d_loss(cfg: config_lib.Config, gan: models.Gan, fwd: Forward) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """D's loss (this replica's share of the global mean, penalties included) and D's metrics.

  Returns:
    (scalar loss, {"d_loss", "d_real_accuracy", "d_fake_accuracy", "d_real_output", "d_fake_output"[,
    "gradient_penalty"][, "r1_penalty"][, "d_class_loss", "d_class_accuracy"]}), every metric a share of its
    global-batch mean.
  """
  per_example, _ = losses.get(cfg.loss)(fwd.real_logits, fwd.fake_logits)
  metrics = {}

  def d_of(images):  # D with the real labels bound: the penalties differentiate with respect to images only.
    return gan.discriminate(images, fwd.real_labels, training=True)

  if cfg.gp_weight > 0:
    # Interpolates take the real labels: the penalty is on D's input space, one label per pair.
    gp = losses.gradient_penalty(d_of, fwd.real_images, fwd.fake_images, fwd.inputs.alpha)
    metrics["gradient_penalty"] = global_mean(cfg, gp)
    per_example += cfg.gp_weight * gp
  if cfg.r1_weight > 0:
    r1 = losses.r1_penalty(d_of, fwd.real_images)
    metrics["r1_penalty"] = global_mean(cfg, r1)
    per_example += 0.5 * cfg.r1_weight * r1
  if cfg.class_loss_weight > 0:
    # Real images only (as in TAC-GAN and StudioGAN's ACGAN): a classifier also fitted to G's early images would
    # reward G for being classifiable rather than for looking like the class.
    ce, correct, labelled = _class_terms(fwd.real_labels, fwd.real_class_logits)
    # d_class_labelled: the share of real images with a class, by which `means` divides d_class_accuracy's sum.
    metrics.update(d_class_loss=global_mean(cfg, ce), d_class_accuracy=global_mean(cfg, correct),
                   d_class_labelled=global_mean(cfg, labelled))
    per_example += cfg.class_loss_weight * ce
  # Accuracies at the loss's own decision point (LSGAN's is 1/2, not 0).
  threshold = losses.decision_threshold(cfg.loss)
  real = tf.reshape(tf.cast(fwd.real_logits, tf.float32), [-1])
  fake = tf.reshape(tf.cast(fwd.fake_logits, tf.float32), [-1])
  loss = global_mean(cfg, per_example)
  metrics.update(d_loss=loss, d_real_accuracy=global_mean(cfg, tf.cast(real > threshold, tf.float32)),
                 d_fake_accuracy=global_mean(cfg, tf.cast(fake < threshold, tf.float32)),
                 d_real_output=global_mean(cfg, losses.d_output(cfg.loss, fwd.real_logits)),
                 d_fake_output=global_mean(cfg, losses.d_output(cfg.loss, fwd.fake_logits)))
  return loss, metrics


def ada_rt(cfg: config_lib.Config, real_logits: tf.Tensor) -> tf.Tensor:
  """This replica's share of ADA's r_t = E[sign(D(real) - threshold)] over the global batch (the replicas' shares
  sum to it), D's over-confidence on reals, measured from the loss's decision point (`losses.decision_threshold`).

  Args:
    real_logits: D's outputs on this replica's (augmented) reals, [b, 1].

  Returns:
    float32 scalar.
  """
  real = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
  return global_mean(cfg, tf.sign(real - losses.decision_threshold(cfg.loss)))


def _class_terms(labels: tf.Tensor, class_logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(cross-entropy [b], 1.0 where the class head picks `labels` else 0.0 [b], 1.0 where the example has a class
  (label >= 0) else 0.0 [b]) of the auxiliary classifier; an example without a class is neither loss nor hit."""
  labels = tf.cast(labels, tf.int32)
  correct = tf.equal(tf.argmax(class_logits, axis=-1, output_type=tf.int32), labels)
  return (losses.class_cross_entropy(labels, class_logits), tf.cast(correct, tf.float32),
          tf.cast(labels >= 0, tf.float32))


def g_loss(cfg: config_lib.Config, fwd: Forward) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """G's loss (this replica's share of the global mean) and its metrics {"g_loss"[, "g_class_loss",
  "g_class_accuracy"][, "g_mode_seeking"]}: with --class_loss_weight, G is also scored by D's class head on the
  classes it was asked; with --mode_seeking_weight, G is penalised where two noises of one label give close images."""
  _, per_example = losses.get(cfg.loss)(fwd.real_logits, fwd.fake_logits)
  metrics = {}
  if cfg.class_loss_weight > 0:
    ce, correct, _ = _class_terms(fwd.inputs.fake_labels, fwd.fake_class_logits)
    metrics.update(g_class_loss=global_mean(cfg, ce), g_class_accuracy=global_mean(cfg, correct))
    per_example += cfg.class_loss_weight * ce
  if cfg.mode_seeking_weight > 0:
    ms = losses.mode_seeking(fwd.generated, fwd.inputs.noise)
    metrics["g_mode_seeking"] = global_mean(cfg, ms)
    per_example += cfg.mode_seeking_weight * ms
  loss = global_mean(cfg, per_example)
  metrics["g_loss"] = loss
  return loss, metrics


def d_gradients(cfg: config_lib.Config, state: state_lib.TrainState, batch, step, draw: int) -> List[tf.Tensor]:
  """The gradients of an extra discriminator update (--d_steps_per_g > 1), scaled under float16; no metrics."""
  with tf.GradientTape() as tape:
    fwd = forward(state.gan, batch, step_inputs(cfg, state.gan, step, draw), augmenter(cfg, state))
    loss, _ = d_loss(cfg, state.gan, fwd)
    loss = precision.scale_loss(state.d_optimizer, loss)
  return tape.gradient(loss, state.gan.discriminator.trainable_variables)


def gd_gradients(cfg: config_lib.Config, state: state_lib.TrainState, batch, step, draw: int
                 ) -> Tuple[List[tf.Tensor], List[tf.Tensor], Dict[str, tf.Tensor]]:
  """The tutorial step: one forward pass, two tapes; returns (G's gradients, D's gradients, metrics)."""
  gan = state.gan
  with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
    fwd = forward(gan, batch, step_inputs(cfg, gan, step, draw), augmenter(cfg, state))
    d_value, metrics = d_loss(cfg, gan, fwd)
    g_value, g_metrics = g_loss(cfg, fwd)
    metrics.update(g_metrics)
    if cfg.augment == "ada":
      metrics["ada_rt"] = ada_rt(cfg, fwd.real_logits)
      p = tf.cast(state.augment_p, tf.float32)
      metrics["augment_p"] = global_mean(cfg, tf.fill(tf.shape(fwd.real_labels), p))
    g_value = precision.scale_loss(state.g_optimizer, g_value)
    d_value = precision.scale_loss(state.d_optimizer, d_value)
  return (g_tape.gradient(g_value, gan.generator.trainable_variables),
          d_tape.gradient(d_value, gan.discriminator.trainable_variables), metrics)


def replica_step(cfg: config_lib.Config, state: state_lib.TrainState, batches: Sequence, step,
                 d_grads_fn: Optional[Callable] = None, gd_grads_fn: Optional[Callable] = None
                 ) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
  """One generator step on one replica: `len(batches) - 1` extra D updates, then the tutorial step on the last.

  Args:
    cfg, state: the run's Config and TrainState.
    batches: `cfg.d_steps_per_g` data batches of this replica.
    step: int64 scalar, the step being taken (the checkpointed step before it).
    d_grads_fn, gd_grads_fn: (batch, step, draw) -> `d_gradients` / `gd_gradients` of cfg and state (e.g. their
      XLA-compiled versions); default: those functions themselves.

  Returns:
    (metrics of the last batch, float32 scalar 1.0 if its D or G loss was non-finite else 0.0).
  """
  d_grads_fn = d_grads_fn or functools.partial(d_gradients, cfg, state)
  gd_grads_fn = gd_grads_fn or functools.partial(gd_gradients, cfg, state)
  discriminator = state.gan.discriminator
  for draw, batch in enumerate(batches[:-1]):
    precision.apply_gradients(state.d_optimizer, d_grads_fn(batch, step, draw), discriminator.trainable_variables)
  g_grads, d_grads, metrics = gd_grads_fn(batches[-1], step, len(batches) - 1)
  precision.apply_gradients(state.g_optimizer, g_grads, state.gan.generator.trainable_variables)
  precision.apply_gradients(state.d_optimizer, d_grads, discriminator.trainable_variables)
  finite = tf.logical_and(tf.math.is_finite(metrics["d_loss"]), tf.math.is_finite(metrics["g_loss"]))
  return metrics, 1.0 - tf.cast(finite, tf.float32)


def update_ema(cfg: config_lib.Config, state: state_lib.TrainState) -> None:
  """Moves the EMA generator's trainable weights towards G's (cross-replica context, after the step's updates).

  Warm-up: an average over the steps so far while there are few of them (TF's ExponentialMovingAverage with
  num_updates), so that early EMA samples are not dominated by the initial weights. Only trainable weights are
  averaged; BatchNorm statistics are re-estimated for the EMA weights when they are used (TrainState.prepare_ema).
  The power-iteration vectors u of spectrally normalised layers are copied from G's: an average of unit vectors is
  not one, and G's u, estimated over every step, is the best start for weights that follow G's (the EMA copy never
  updates its own: see TrainState.prepare_ema).
  """
  updates = tf.cast(state.step, tf.float32)
  rate = tf.minimum(cfg.ema_decay, (1.0 + updates) / (10.0 + updates))
  # G's weights are identical on all replicas, and an assignment in cross-replica context reaches every copy.
  for ema_var, var in zip(state.ema_generator.trainable_variables, state.gan.generator.trainable_variables):
    ema_var.assign(rate * ema_var + (1.0 - rate) * var)
  for ema_u, u in zip(gan_layers.power_iteration_vectors(state.ema_generator),
                      gan_layers.power_iteration_vectors(state.gan.generator)):
    ema_u.assign(u)


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

  def __init__(self, cfg: config_lib.Config, strategy: tf.distribute.Strategy, state: state_lib.TrainState):
    check_jit_supported(cfg, strategy, state.gan)
    self.names = metric_names(cfg)
    self._cfg, self._strategy, self._state = cfg, strategy, state
    with strategy.scope():
      # Per-replica sums of [metrics..., non-finite losses], read and reset once per call.
      self._totals = tf.Variable(tf.zeros([len(self.names) + 1]), trainable=False, name="chunk_totals",
                                 synchronization=tf.VariableSynchronization.ON_READ,
                                 aggregation=tf.VariableAggregation.SUM)
    self._run_steps = self._make_run_steps()
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

    @tf.function(autograph=False)
    def finish(stop):
      return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(local_vector, args=(stop,)), axis=None)

    return finish

  def _make_run_steps(self):
    cfg, strategy, state = self._cfg, self._strategy, self._state
    d_grads_fn = functools.partial(d_gradients, cfg, state)
    gd_grads_fn = functools.partial(gd_gradients, cfg, state)
    if cfg.jit_compile:
      # XLA compiles the per-replica forward and backward pass, nearly all of the work. The updates stay outside:
      # they all-reduce gradients and LossScaleOptimizer merges replicas in a cond, which XLA cannot hold on CPUs.
      d_grads_fn = tf.function(d_grads_fn, jit_compile=True, autograph=False)
      gd_grads_fn = tf.function(gd_grads_fn, jit_compile=True, autograph=False)

    ada = cfg.augment == "ada"

    def one_replica(batches, step):
      metrics, nonfinite = replica_step(cfg, state, batches, step, d_grads_fn, gd_grads_fn)
      self._totals.assign_add(tf.stack([metrics[name] for name in self.names] + [nonfinite]))
      return metrics["ada_rt"] if ada else tf.constant(0.0)

    def one_step(iterator):
      batches = tuple(next(iterator) for _ in range(cfg.d_steps_per_g))
      r_t = strategy.run(one_replica, args=(batches, state.step.read_value()))
      if ada:
        # One p for every replica and worker: from the all-reduced r_t, assigned in cross-replica context.
        r_t = strategy.reduce(tf.distribute.ReduceOp.SUM, r_t, axis=None)
        state.augment_p.assign(augment.ada_update(state.augment_p, r_t, cfg.ada_target, cfg.ada_kimg,
                                                  cfg.batch_size))
      state.step.assign_add(1)
      precision.count_attempt(state.g_optimizer)
      precision.count_attempt(state.d_optimizer, cfg.d_steps_per_g)
      if state.ema_generator is not None:
        update_ema(cfg, state)

    # The loop is written as the graph loop it is: without autograph (see the module docstring).
    @tf.function(autograph=False)
    def run_steps(iterator, num_steps):
      def body(i):
        one_step(iterator)
        return i + 1
      tf.while_loop(lambda i: i < num_steps, body, [tf.constant(0, tf.int32)])

    return run_steps


def make_train_step(cfg, strategy: tf.distribute.Strategy, state) -> TrainStep:
  """Returns the run's `TrainStep` (see its docstring)."""
  return TrainStep(cfg, strategy, state)
