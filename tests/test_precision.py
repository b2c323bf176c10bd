"""Mixed precision and XLA: float16 loss scaling (skips, per-optimizer scales, replica agreement, checkpoints),
bfloat16, float32 model outputs, and the --jit_compile refusal.

Overflow is injected the way it happens in training: a loss scale far too large makes that network's float16
gradients overflow (inf) while the other network, with its own optimizer and scale, is unaffected. Replica
disagreement is injected with a NaN in one replica's real images only.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import precision
from gan_dist import state as state_lib
from gan_dist import train_step as train_step_lib
from tests import helpers

BATCH = 8  # Global: 4 images per replica on the 2 logical CPUs.
HUGE_SCALE = 2.0**100  # Finite in float32, but any gradient times it overflows float16.


def _dataset(strategy, poison_replica=None):
  """Distributed iterator of random images in [-1, 1]; `poison_replica`'s batches are all NaN."""
  per_replica = BATCH // strategy.num_replicas_in_sync
  rng = np.random.RandomState(0)
  batches = rng.uniform(-1, 1, size=(strategy.num_replicas_in_sync, per_replica, 28, 28, 1)).astype(np.float32)
  if poison_replica is not None:
    batches[poison_replica] = np.nan

  def dataset_fn(ctx):
    del ctx  # One input pipeline: consecutive elements go to consecutive replicas.
    return tf.data.Dataset.from_tensor_slices(
        {"images": batches, "labels": np.zeros((len(batches), per_replica), np.int32)}).repeat()

  return iter(strategy.distribute_datasets_from_function(dataset_fn))


def _weights(model):
  return [v.numpy() for v in model.trainable_variables]


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a, b))


def _int(variable):
  return int(tf.convert_to_tensor(variable).numpy())


def _replica_values(variable):
  """The value of a (Keras-wrapped) mirrored variable on every replica, which must agree."""
  variable = getattr(variable, "value", variable)  # keras.Variable -> its tf.distribute variable.
  return [float(v.numpy()) for v in variable.values] if hasattr(variable, "values") else [float(variable.numpy())]


@pytest.fixture(scope="module")
def strategy(mirrored2):
  """The process's one MirroredStrategy over the 2 logical CPUs (see conftest: a second one breaks collectives)."""
  return mirrored2


@pytest.fixture(scope="module")
def float16_state(tmp_path_factory, strategy):
  """A mixed_float16 mlp state on 2 replicas (the loss scaling is the same for every architecture, and the mlp
  traces fastest)."""
  cfg = helpers.config(tmp_path_factory.mktemp("fp16"), arch="mlp", precision="mixed_float16", batch_size=BATCH)
  state = state_lib.create_state(cfg, strategy)
  # The run's policy applied to its models only: nothing built afterwards inherits mixed_float16.
  assert keras.config.dtype_policy().name == "float32"
  return cfg, strategy, state


@pytest.fixture(scope="module")
def float16_run(float16_state):
  """`float16_state` and its traced train function (shared: tracing is the slow part)."""
  cfg, strategy_, state = float16_state
  yield cfg, strategy_, state, train_step_lib.make_train_step(cfg, strategy_, state)


def _set_scales(state, g, d):
  state.g_optimizer.dynamic_scale.assign(g)
  state.d_optimizer.dynamic_scale.assign(d)


def _counts(state):
  return {k: int(v) for k, v in precision.skipped_steps(state).items()}


@pytest.mark.slow
@pytest.mark.parametrize("overflowing", ["g", "d"])
def test_float16_overflow_skips_that_network_and_halves_its_scale(float16_run, overflowing):
  _, strategy_, state, train = float16_run
  gan = state.gan
  other = "d" if overflowing == "g" else "g"
  scales = {overflowing: HUGE_SCALE, other: 2.0**10}
  _set_scales(state, scales["g"], scales["d"])
  before = {"g": _weights(gan.generator), "d": _weights(gan.discriminator)}
  skipped_before = _counts(state)
  applied_before = {n: _int(getattr(state, f"{n}_optimizer").inner_optimizer.iterations) for n in "gd"}

  result = train(_dataset(strategy_), tf.constant(1, tf.int32))
  assert not result.diverged  # A skipped-and-rescaled float16 step is normal, not a divergence.
  metrics = result.means()

  after = {"g": _weights(gan.generator), "d": _weights(gan.discriminator)}
  assert _same(before[overflowing], after[overflowing]), "the overflowing network must not be updated"
  assert not _same(before[other], after[other]), "the other network must be updated"
  assert all(np.isfinite(w).all() for w in after["g"] + after["d"])
  new_scales = {k.split("/")[1]: float(v) for k, v in precision.loss_scales(state).items()}
  assert new_scales == {overflowing: HUGE_SCALE / 2, other: 2.0**10}
  for name in "gd":  # Scales are mirrored: every replica holds the same value.
    assert len(set(_replica_values(getattr(state, f"{name}_optimizer").dynamic_scale))) == 1
  skipped = _counts(state)
  assert skipped[f"skipped_steps/{overflowing}"] == skipped_before[f"skipped_steps/{overflowing}"] + 1
  assert skipped[f"skipped_steps/{other}"] == skipped_before[f"skipped_steps/{other}"]
  applied = {n: _int(getattr(state, f"{n}_optimizer").inner_optimizer.iterations) for n in "gd"}
  assert applied == {overflowing: applied_before[overflowing], other: applied_before[other] + 1}
  assert np.isfinite(float(metrics["d_loss"])) and np.isfinite(float(metrics["g_loss"]))


@pytest.mark.slow
def test_float16_nonfinite_on_one_replica_skips_on_all(float16_run):
  _, strategy_, state, train = float16_run
  _set_scales(state, 2.0**10, 2.0**10)
  d_before = _weights(state.gan.discriminator)
  skipped_before = _counts(state)

  # Replica 1's real images are NaN: only its D gradients are non-finite. Keras' LossScaleOptimizer alone would
  # follow replica 0's finite check and apply the NaN all-reduced gradients.
  train(_dataset(strategy_, poison_replica=1), tf.constant(1, tf.int32))

  assert _same(d_before, _weights(state.gan.discriminator))
  for v in state.gan.discriminator.trainable_variables:
    assert all(np.isfinite(x.numpy()).all() for x in v.value.values)
  assert _replica_values(state.d_optimizer.dynamic_scale) == [2.0**9, 2.0**9]
  assert _counts(state)["skipped_steps/d"] == skipped_before["skipped_steps/d"] + 1
  assert _counts(state)["skipped_steps/g"] == skipped_before["skipped_steps/g"]


@pytest.mark.slow
def test_float16_steps_are_finite_and_outputs_float32(float16_run):
  _, strategy_, state, train = float16_run
  _set_scales(state, 2.0**15, 2.0**15)
  result = train(_dataset(strategy_), tf.constant(3, tf.int32))
  assert not result.diverged
  assert all(np.isfinite(float(v)) for v in result.means().values())
  # Loss scaling is on: each optimizer reports its own scale (unchanged by 3 finite steps).
  assert {k: float(v) for k, v in precision.loss_scales(state).items()} == {
      "loss_scale/g": 2.0**15, "loss_scale/d": 2.0**15}
  gan = state.gan
  assert isinstance(state.g_optimizer, keras.optimizers.LossScaleOptimizer)
  assert state.g_optimizer is not state.d_optimizer
  assert gan.generator.layers[1].compute_dtype == "float16"  # The Dense layer computes in float16 ...
  images = gan.generator(tf.zeros([2, gan.latent_dim]), training=False)
  assert images.dtype == tf.float32  # ... but the images and the logits (losses) are float32.
  assert gan.discriminator(images, training=False).dtype == tf.float32


def test_float16_checkpoint_restores_loss_scales(float16_state, tmp_path):
  cfg, strategy_, state = float16_state
  _set_scales(state, 2.0**7, 2.0**21)
  state.d_optimizer.step_counter.assign(17)
  # Skipped counts a fresh state cannot have (run alone, the fixture's are 0, a fresh state's value): 3 and 5 more
  # attempted than applied updates, different for G and D.
  before = _counts(state)
  precision.attempted_updates(state.g_optimizer).assign_add(3)
  precision.attempted_updates(state.d_optimizer).assign_add(5)
  skipped = _counts(state)
  assert skipped == {"skipped_steps/g": before["skipped_steps/g"] + 3, "skipped_steps/d": before["skipped_steps/d"] + 5}
  path = checkpoint_lib.make_checkpoint(state).save(str(tmp_path / "ckpt"))

  fresh = state_lib.create_state(cfg, strategy_)
  assert {k: float(v) for k, v in precision.loss_scales(fresh).items()} == {
      "loss_scale/g": 2.0**15, "loss_scale/d": 2.0**15}
  assert _counts(fresh) == {"skipped_steps/g": 0, "skipped_steps/d": 0}
  checkpoint_lib.make_checkpoint(fresh).restore(path).assert_existing_objects_matched()
  assert {k: float(v) for k, v in precision.loss_scales(fresh).items()} == {
      "loss_scale/g": 2.0**7, "loss_scale/d": 2.0**21}
  assert _replica_values(fresh.d_optimizer.dynamic_scale) == [2.0**21, 2.0**21]
  assert _int(fresh.d_optimizer.step_counter) == 17
  assert _counts(fresh) == skipped


@pytest.mark.slow
def test_bfloat16_step_is_finite_without_loss_scaling(one_device, tmp_path):
  strategy = one_device  # Not about replicas: one traces in half the time.
  # With ADA: the augmentation computes in float32 in front of a bfloat16 D.
  cfg = helpers.config(tmp_path, arch="mlp", precision="mixed_bfloat16", batch_size=BATCH, augment="ada")
  state = state_lib.create_state(cfg, strategy)
  assert keras.config.dtype_policy().name == "float32"  # Only the run's models compute in bfloat16.
  assert not isinstance(state.g_optimizer, keras.optimizers.LossScaleOptimizer)
  assert precision.loss_scales(state) == {} and precision.skipped_steps(state) == {}
  assert state.gan.generator.layers[1].compute_dtype == "bfloat16"
  train = train_step_lib.make_train_step(cfg, strategy, state)
  metrics = train(_dataset(strategy), tf.constant(2, tf.int32)).means()
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert all(np.isfinite(w).all() for w in _weights(state.gan.generator) + _weights(state.gan.discriminator))


def test_jit_compile_refused_before_tracing(strategy, tmp_path):
  cfg = helpers.config(tmp_path, jit_compile=True, sync_batchnorm=True, batch_size=BATCH)
  with pytest.raises(ValueError, match="--jit_compile.*--nosync_batchnorm"):
    # The check needs only the config and the strategy: it fails before any model is built or traced.
    train_step_lib.check_jit_supported(cfg, strategy)
  assert train_step_lib.check_jit_supported(helpers.config(tmp_path, jit_compile=False), strategy) is None
  one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
  assert train_step_lib.check_jit_supported(cfg, one_device) is None


def test_make_train_step_refuses_jit_before_tracing(strategy, tmp_path):
  cfg = helpers.config(tmp_path, jit_compile=True, sync_batchnorm=True, batch_size=BATCH)
  state = state_lib.create_state(cfg, strategy)
  with pytest.raises(ValueError, match="XLA"):
    train_step_lib.make_train_step(cfg, strategy, state)


def test_fused_adam_takes_keras_adams_steps_on_every_replica(mirrored2):
  """precision.Adam (one ResourceApplyAdam per variable) moves weights and slots as Keras' Adam does, over steps
  whose bias corrections differ, under a strategy (each replica's copy updated, identically) and without one."""
  rng = np.random.RandomState(0)
  init = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
  grads = [[rng.normal(size=w.shape).astype(np.float32) for w in init] for _ in range(4)]

  def run(make, strategy):
    with strategy.scope():
      variables = [keras.Variable(w) for w in init]
      optimizer = make(1e-2, beta_1=0.5, beta_2=0.9)
      optimizer.build(variables)

    @tf.function(autograph=False)
    def step(g):
      # Each replica's own gradient tensors (tf.identity in its context), as a train step computes them.
      strategy.run(lambda: optimizer.apply_gradients(zip([tf.identity(x) for x in g], variables)))

    for g in grads:
      step([tf.constant(x) for x in g])
    return [helpers.replica_values(v) for v in variables + list(optimizer.variables)]

  for strategy in (tf.distribute.get_strategy(), mirrored2):
    expected, found = run(keras.optimizers.Adam, strategy), run(precision.Adam, strategy)
    assert len(found) == len(expected) == 2 + 2 + 2 * 2  # Weights; iterations, learning rate; m and v of each.
    for copies, reference in zip(found, expected):
      assert len(copies) == strategy.num_replicas_in_sync
      for copy in copies:
        # Float32 round-off of one formula computed in two orders (Eigen's fused kernel, TensorFlow's ops).
        np.testing.assert_allclose(copy, reference[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(found[0][0], init[0])  # The steps moved the weights.
