"""Mixed precision in one place: the dtype policy models are built under, loss scaling and its bookkeeping.

--precision=float32          everything in float32.
--precision=mixed_bfloat16   layers compute in bfloat16 with float32 variables; no loss scaling (bfloat16 has
                             float32's exponent range).
--precision=mixed_float16    layers compute in float16; each optimizer is its own LossScaleOptimizer, because G's and
                             D's gradients overflow at different scales. The loss is scaled inside the tape;
                             `apply_gradients` unscales and skips a step whose gradients are not finite, halving that
                             optimizer's scale. Replicas first agree on whether any of them overflowed.

Models take their dtype policy when they are built, so `policy_scope` sets Keras' global policy only while the
run's models are built: a classifier or a tool built later in the same process gets float32.
"""

import contextlib
from typing import Dict, Iterator, List, Optional

import keras
import tensorflow as tf


def uses_loss_scaling(cfg) -> bool:
  """Whether the run scales its losses (mixed_float16)."""
  return cfg.precision == "mixed_float16"


@contextlib.contextmanager
def policy_scope(precision: str) -> Iterator[None]:
  """Builds the layers created inside with the Keras dtype policy `precision`; restores the previous policy after."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(precision)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


class Adam(keras.optimizers.Adam):
  """Keras' Adam whose update of a variable is TensorFlow's fused ResourceApplyAdam kernel.

  The same variables (checkpointed under the same names), the same formula (m, v, then var -= lr_t m / (sqrt(v) +
  epsilon) with lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)), but one update kernel and a few scalar ops per
  variable and replica (about 12 ops) where Keras' update builds about 23: on 2 replicas of the ResNet recipe that
  was an eighth of the train step's graph, whose tracing and first run users wait for at every start (tracing plus
  first run: 45 s -> 36 s for a small cresnet on 2 CPU replicas, 2-core AVX2 AMD EPYC).
  """

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad:
      return super().update_step(gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    var, m, v = (x.value if isinstance(x, keras.Variable) else x
                 for x in (variable, self._momentums[index], self._velocities[index]))
    dtype = var.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
    # Inside a strategy's update, each handle is this device's copy.
    return tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
                                        beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
                                        beta1=beta_1, beta2=beta_2, epsilon=tf.constant(self.epsilon, dtype),
                                        grad=tf.cast(gradient, dtype))


def make_optimizer(cfg, learning_rate: float) -> keras.optimizers.Optimizer:
  """Adam (fused) with the run's betas, wrapped in its own LossScaleOptimizer under mixed_float16."""
  optimizer = Adam(learning_rate, beta_1=cfg.beta1, beta_2=cfg.beta2)
  if uses_loss_scaling(cfg):
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def loss_scale_optimizer(optimizer) -> Optional[keras.optimizers.LossScaleOptimizer]:
  return optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None


def scale_loss(optimizer, loss: tf.Tensor) -> tf.Tensor:
  """`loss` times the optimizer's loss scale (unchanged without loss scaling). Call inside the gradient tape: a
  product taken outside it is not recorded, and every gradient would be None."""
  lso = loss_scale_optimizer(optimizer)
  return lso.scale_loss(loss) if lso is not None else loss


def attempted_updates(optimizer) -> tf.Variable:
  """The counter of updates the train step asked `optimizer` (a LossScaleOptimizer) to make, skipped or not.

  Keras 3's LossScaleOptimizer creates its own `iterations` variable but never increments it (its `iterations`
  property returns the inner optimizer's, which counts applied updates only). The train step increments it once
  per attempted update, so it is checkpointed with the optimizer, and attempted - applied = skipped.
  """
  return optimizer._iterations  # pylint: disable=protected-access


def count_attempt(optimizer, updates: int = 1) -> None:
  """Records `updates` attempted updates of `optimizer` (no-op without loss scaling)."""
  if loss_scale_optimizer(optimizer) is not None:
    attempted_updates(optimizer).assign_add(updates)


def loss_scales(state) -> Dict[str, tf.Tensor]:
  """The current float16 loss scale of each optimizer: {"loss_scale/g", "loss_scale/d"}: float32, or {}."""
  return {f"loss_scale/{name}": tf.identity(opt.dynamic_scale)
          for name, opt in (("g", state.g_optimizer), ("d", state.d_optimizer)) if loss_scale_optimizer(opt)}


def skipped_steps(state) -> Dict[str, tf.Tensor]:
  """Updates skipped for non-finite gradients: {"skipped_steps/g", "skipped_steps/d"}: int64, or {}."""
  return {f"skipped_steps/{name}": tf.cast(attempted_updates(opt) - opt.inner_optimizer.iterations, tf.int64)
          for name, opt in (("g", state.g_optimizer), ("d", state.d_optimizer)) if loss_scale_optimizer(opt)}


def agree_on_finite(grads: List[Optional[tf.Tensor]]) -> List[Optional[tf.Tensor]]:
  """Makes every replica see non-finite gradients if any replica has them (several replicas).

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


def apply_gradients(optimizer, grads, variables) -> None:
  """Applies (scaled) gradients; under loss scaling the replicas first agree on skipping a non-finite step."""
  if loss_scale_optimizer(optimizer) is not None:
    grads = agree_on_finite(grads)
  optimizer.apply_gradients(zip(grads, variables))
