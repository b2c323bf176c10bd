"""The distributed train step on 2 logical CPUs: finite losses, moving step, identical replicas, BatchNorm, the
one-device equivalence of the loss reduction, per-chunk metrics, topology-free noise, EMA.

Tests whose point is not the number of replicas (per-call metric sums, stop/divergence reporting, extra D steps, one
of the penalties) run one replica (`one_device`): tracing the step for 2 replicas costs twice as much. Tracing is most
of the time here, so the tests of the plain mlp step share two traced steps (`plain_runs`: one device, 2 replicas),
each test starting from the same step-0 state restored from a checkpoint."""

import functools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import data
from gan_dist import losses
from gan_dist import models
from gan_dist import state as state_lib
from gan_dist import train_step as train_step_lib
from tests import helpers


def _setup(tmp_path, strategy, **overrides):
  d = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  cfg = helpers.config(tmp_path, data_dir=d, **overrides)
  return (cfg, *helpers.train_setup(cfg, strategy))


_replica_values = helpers.replica_values


class _Run:
  """A state, its data and its traced train step on one strategy (`helpers.train_parts`), that a test puts back to
  step 0 with `restart()` instead of building and tracing its own."""

  def __init__(self, cfg, strategy, directory):
    self.cfg = cfg
    self.state, self._dataset, self.train = helpers.train_parts(cfg, strategy)
    self._checkpoint = checkpoint_lib.make_checkpoint(self.state)
    self._start = self._checkpoint.write(os.path.join(directory, "step0"))

  def restart(self):
    """Restores every variable a checkpoint holds (weights, optimizer slots and iterations, EMA, step) to their
    step-0 values and returns a new iterator from the first batch: the start of a fresh setup. The step is not
    traced again (the test that counts traces says so)."""
    self._checkpoint.read(self._start).assert_consumed()
    assert int(self.state.step.numpy()) == 0
    return iter(self._dataset)


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory, one_device, mirrored2):
  """{"one_device": _Run, "mirrored": _Run} of one config (mlp: BatchNorm in G, no dropout; an EMA generator; no
  augmentation), on the same data."""
  tmp_path = tmp_path_factory.mktemp("plain")
  d = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  cfg = helpers.config(tmp_path, data_dir=d, arch="mlp", batch_size=8, ema_decay=0.9)
  return {name: _Run(cfg, strategy, str(tmp_path / name))
          for name, strategy in (("one_device", one_device), ("mirrored", mirrored2))}


def test_a_restarted_run_takes_the_steps_of_a_fresh_one_without_tracing_again(plain_runs):
  """What the tests sharing `plain_runs` rely on: after `restart()` the same steps give bitwise the same weights,
  metrics and EMA as the first time, from the same traced function."""
  run = plain_runs["one_device"]
  found = []
  for _ in range(2):
    it = run.restart()
    result = run.train(it, 2)
    found.append((result.sums, [v.numpy() for v in run.state.variables()], int(run.state.step.numpy())))
  assert found[0][0] == found[1][0] and found[0][2] == found[1][2] == 2
  for a, b in zip(found[0][1], found[1][1]):
    np.testing.assert_array_equal(a, b)
  assert run.train._run_steps.experimental_get_tracing_count() == 1  # pylint: disable=protected-access


@pytest.mark.slow
def test_mirrored_steps(plain_runs):
  run = plain_runs["mirrored"]
  cfg, state, train = run.cfg, run.state, run.train
  it = run.restart()
  before = [w.copy() for w in state.gan.generator.get_weights()]
  result = train(it, tf.constant(3))
  assert int(state.step.numpy()) == 3
  assert result.steps == 3 and not result.diverged and not result.stop
  metrics = result.means()
  assert set(metrics) == set(train_step_lib.metric_names(cfg))
  for name, value in metrics.items():
    assert np.isfinite(value), name
  assert 0.0 <= metrics["d_real_accuracy"] <= 1.0
  train(it, 2)
  assert int(state.step.numpy()) == 5
  assert int(state.g_optimizer.iterations.numpy()) == 5
  after = state.gan.generator.get_weights()
  assert any(not np.allclose(a, b) for a, b in zip(before, after))
  # Every variable of both networks is identical on both replicas: same gradients (summed), same update.
  for model in (state.gan.generator, state.gan.discriminator):
    for var in model.variables:
      copies = _replica_values(var)
      assert len(copies) == 2, var.path
      np.testing.assert_array_equal(copies[0], copies[1], err_msg=var.path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [{}, {"augment": "diffaug", "mode_seeking_weight": 1.0}],
                         ids=["none", "diffaug_and_mode_seeking"])
def test_one_device_and_two_replicas_take_the_same_step(tmp_path, request, one_device, mirrored2, variant):
  """The trainer's own step (make_train_step) on 2 replicas updates G and D as one device on the same global batch:
  per-example losses reduced by the global batch size, gradients summed over replicas, BatchNorm statistics of the
  global batch, and noise (and augmentation) drawn for the global batch then split (mlp: BatchNorm in G, no
  dropout); with --mode_seeking_weight, each replica's rows hold whole pairs.

  Adam's step hides the scale of a gradient (lr * m / sqrt(v) is the same for 2g), so the weights alone miss a
  replica gradient averaged instead of summed; its first moment m is linear in the gradients and does not."""
  weights = []
  for name, strategy in (("one_device", one_device), ("mirrored", mirrored2)):
    if variant:
      _, state, it, train = _setup(tmp_path / name, strategy, arch="mlp", batch_size=8, **variant)
    else:  # The plain step: the shared runs (their EMA does not touch G or D).
      run = request.getfixturevalue("plain_runs")[name]
      state, it, train = run.state, run.restart(), run.train
    result = train(it, 2)
    weights.append((result.means(), state.gan.generator.get_weights(), state.gan.discriminator.get_weights(),
                    _first_moments(state)))
  (m1, g1, d1, f1), (m2, g2, d2, f2) = weights
  for name in m1:
    assert m1[name] == pytest.approx(m2[name], rel=1e-4, abs=1e-6), name
  trainable = state.gan.generator.trainable_variables + state.gan.discriminator.trainable_variables
  assert len(f1) == len(f2) == len(trainable)  # Every variable's m, each compared below.
  for (path, a), (_, b) in zip(f1, f2):
    # float32 round-off of sums over 8 examples in another order: observed <= 2.1e-6 of the variable's largest
    # |m| (elements near 0 cancel, so not relative to each element); a factor 2 in the gradient is 0.5 of it.
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max(), err_msg=path)
  for a, b in zip(g1 + d1, g2 + d2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _first_moments(state):
  """[(path, Adam's first moment m)] of every trainable variable of G and D."""
  return [(v.path, v.numpy()) for opt in (state.g_optimizer, state.d_optimizer) for v in opt.variables
          if v.name.endswith("_momentum")]


def test_metrics_cover_every_step_of_a_call(plain_runs):
  """A call reports the sum over all its steps (one all-reduce at the end), not its last step: 3 steps in one call
  give the same sums as 3 calls of one step from the same start."""
  run = plain_runs["one_device"]
  one_call = run.train(run.restart(), 3)
  it = run.restart()
  calls = [run.train(it, 1) for _ in range(3)]
  for name, total in one_call.sums.items():
    assert total == pytest.approx(sum(c.sums[name] for c in calls), rel=1e-4), name
  assert not np.isclose(one_call.sums["d_loss"], 3 * calls[-1].sums["d_loss"])


def test_stop_vote_and_divergence_are_reported(plain_runs):
  run = plain_runs["one_device"]
  state, it, train = run.state, run.restart(), run.train
  assert train(it, 1, stop=lambda: True).stop
  assert not train(it, 1).stop
  state.gan.generator.trainable_variables[0].assign(
      tf.fill(state.gan.generator.trainable_variables[0].shape, float("nan")))
  result = train(it, 2)
  assert result.diverged and result.nonfinite_weights and result.nonfinite_losses > 0


def test_noise_is_a_function_of_seed_and_step_split_over_replicas(mirrored2):
  seed = train_step_lib.step_seed(7, tf.constant(3, tf.int64), 0, 1)
  whole = tf.random.stateless_normal([8, 5], seed=seed)

  @tf.function
  def draw():
    return mirrored2.run(lambda: train_step_lib.replica_rows(tf.random.stateless_normal([8, 5], seed=seed)))

  rows = [r.numpy() for r in mirrored2.experimental_local_results(draw())]
  assert not np.allclose(rows[0], rows[1])  # Every replica draws different noise...
  np.testing.assert_array_equal(np.concatenate(rows), whole.numpy())  # ...the global batch's, as on one device.
  other_step = tf.random.stateless_normal([8, 5], seed=train_step_lib.step_seed(7, tf.constant(4, tf.int64), 0, 1))
  assert not np.allclose(other_step, whole)


def test_replicas_draw_different_dropout_masks(mirrored2):
  with mirrored2.scope():
    drop = models.layers.Dropout(0.5)
    drop.build((4, 64))

  @tf.function
  def draw():
    return mirrored2.run(lambda: drop(tf.ones([4, 64]), training=True))

  m0, m1 = mirrored2.experimental_local_results(draw())
  assert not np.array_equal(m0.numpy() == 0, m1.numpy() == 0)


def _bn_stats_after_step(strategy, sync, x):
  cfg = helpers.config_values(sync_batchnorm=sync)
  with strategy.scope():
    bn = models.layers.batch_norm(cfg, momentum=0.5)
    bn.build((None, 3))

  def replica_fn(batch):
    return bn(batch, training=True)

  n = strategy.num_replicas_in_sync
  dist = strategy.experimental_distribute_values_from_function(
      lambda ctx: x[ctx.replica_id_in_sync_group * (len(x) // n):(ctx.replica_id_in_sync_group + 1) * (len(x) // n)])
  tf.function(lambda: strategy.run(replica_fn, args=(dist,)))()
  return _replica_values(bn.moving_mean)


def test_batchnorm_statistics_are_global_and_identical(mirrored2):
  """Decision: --sync_batchnorm (default) computes statistics over the global batch, so every replica keeps the
  same moving statistics, equal to one device's on the same batch, and the checkpoint (replica 0) is right."""
  x = tf.constant([[0.0, 1.0, 2.0]] * 4 + [[10.0, 11.0, 12.0]] * 4)  # Replica 0 and 1 see different halves.
  one_device = _bn_stats_after_step(tf.distribute.OneDeviceStrategy("/cpu:0"), True, x)[0]
  synced = _bn_stats_after_step(mirrored2, True, x)
  assert len(synced) == 2
  np.testing.assert_allclose(synced[0], synced[1])
  np.testing.assert_allclose(synced[0], one_device, rtol=1e-5)
  np.testing.assert_allclose(one_device, 0.5 * np.array([5.0, 6.0, 7.0]), rtol=1e-5)
  # Without synchronisation each replica would keep its own statistics (what --nosync_batchnorm opts into).
  local = _bn_stats_after_step(mirrored2, False, x)
  assert not np.allclose(local[0], local[1])


@pytest.mark.slow
def test_extra_discriminator_steps(tmp_path, one_device, monkeypatch):
  """--d_steps_per_g=3: two D-only updates per G update, then the joint one, each on a new batch: global batches
  3s, 3s + 1 and 3s + 2 of the data order make step s (which examples a batch holds is read from the first pixel of
  its images, which helpers.make_idx_dir sets to the example's index)."""
  seen = []  # (step, draw, sorted example indices) of every batch the step's gradient functions got.

  def recording(grads_fn):
    def record(draw, step, images):
      indices = np.rint((images.numpy()[:, 0, 0, 0] + 1.0) * 127.5).astype(int)
      seen.append((int(step), draw, sorted(indices.tolist())))
      return 0

    def wrapped(cfg, state, batch, step, draw):
      # A py_function runs when the step does, not when it is traced; the gradients wait for it.
      done = tf.py_function(functools.partial(record, draw), [step, batch["images"]], tf.int32)
      with tf.control_dependencies([done]):
        batch = {key: tf.identity(value) for key, value in batch.items()}
      return grads_fn(cfg, state, batch, step, draw)
    return wrapped

  monkeypatch.setattr(train_step_lib, "d_gradients", recording(train_step_lib.d_gradients))
  monkeypatch.setattr(train_step_lib, "gd_gradients", recording(train_step_lib.gd_gradients))
  cfg, state, it, train = _setup(tmp_path, one_device, arch="mlp", d_steps_per_g=3)
  train(it, tf.constant(2))
  assert int(state.step.numpy()) == 2
  assert int(state.g_optimizer.iterations.numpy()) == 2
  assert int(state.d_optimizer.iterations.numpy()) == 6  # Two extra D updates per G update.
  assert sorted(s[:2] for s in seen) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
  order = iter(data.global_batch_indices(64, cfg.batch_size, cfg.seed))  # The data order of _setup's 64 examples.
  expected = [sorted(next(order).numpy().tolist()) for _ in range(6)]
  assert len({i for batch in expected for i in batch}) == 6 * cfg.batch_size  # 6 batches of one epoch: disjoint.
  assert [indices for _, _, indices in sorted(seen)] == expected


@pytest.mark.slow
def test_ema_generator_warms_up_and_follows_the_formula(plain_runs):
  run = plain_runs["mirrored"]
  state, it, train = run.state, run.restart(), run.train
  ema = state.ema_generator
  assert ema is not None and state.sampling_generator is ema
  trainable = {id(v) for v in state.gan.generator.trainable_variables}
  for step, rate in ((1, min(0.9, 2 / 11)), (2, min(0.9, 3 / 12))):
    before = [w.copy() for w in ema.get_weights()]
    moving = {v.path: v.numpy().copy() for v in ema.non_trainable_variables}
    train(it, 1)
    assert int(state.step.numpy()) == step
    # Warm-up: decay min(0.9, (1 + t) / (10 + t)) at the t-th update, so early EMA weights follow G closely.
    for var, ema_var, old in zip(state.gan.generator.weights, ema.weights, before):
      if id(var) in trainable:
        np.testing.assert_allclose(ema_var.numpy(), rate * old + (1 - rate) * var.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=var.path)
      copies = _replica_values(ema_var)
      np.testing.assert_array_equal(copies[0], copies[-1])
    for v in ema.non_trainable_variables:  # BatchNorm statistics are not averaged: see prepare_ema.
      np.testing.assert_array_equal(v.numpy(), moving[v.path])


@pytest.mark.slow
def test_ema_batchnorm_statistics_are_those_of_the_ema_weights(plain_runs):
  run = plain_runs["mirrored"]
  state, it, train = run.state, run.restart(), run.train
  train(it, 3)
  state.prepare_ema()
  ema, gan = state.ema_generator, state.gan
  # The first BatchNorm's moving mean now equals the batch mean of its input under the EMA weights, on the fixed
  # re-estimation noise, on every replica.
  noise = tf.random.stateless_normal([state_lib.EMA_BATCHNORM_SAMPLES, gan.latent_dim], seed=[state.seed, 0x5EED])
  bn = next(layer for layer in ema.layers if isinstance(layer, keras.layers.BatchNormalization))
  features = keras.Model(ema.inputs, bn.input)  # What it normalises: the mlp's LeakyReLU(Dense(noise)).
  expected = tf.reduce_mean(features(noise), axis=0).numpy()
  for copy in _replica_values(bn.moving_mean):
    np.testing.assert_allclose(copy, expected, rtol=1e-4, atol=1e-5)
  # ...and its moving variance the variance over all of them, though they ran EMA_BATCHNORM_CHUNK at a time.
  assert state_lib.EMA_BATCHNORM_SAMPLES // state_lib.EMA_BATCHNORM_CHUNK >= 2
  expected_variance = tf.math.reduce_variance(features(noise), axis=0).numpy()
  for copy in _replica_values(bn.moving_variance):
    np.testing.assert_allclose(copy, expected_variance, rtol=1e-4, atol=1e-5)
  again = [v.numpy().copy() for v in ema.non_trainable_variables]
  state.prepare_ema(force=True)  # Deterministic: the same weights give the same statistics.
  for a, b in zip(again, ema.non_trainable_variables):
    np.testing.assert_array_equal(a, b.numpy())

  # With unchanged weights a second call does not run the generator again (a step that samples, evaluates and
  # checkpoints calls it several times); changed weights are re-estimated.
  bn.moving_mean.assign(tf.zeros_like(bn.moving_mean))
  state.prepare_ema()
  np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros_like(expected))
  train(it, 1)
  state.prepare_ema()
  noise_mean = tf.reduce_mean(features(noise), axis=0).numpy()
  for copy in _replica_values(bn.moving_mean):
    np.testing.assert_allclose(copy, noise_mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss,extra,replicas", [pytest.param("wasserstein", dict(gp_weight=10.0), 2,
                                                               marks=pytest.mark.slow),
                                                  ("hinge", dict(r1_weight=1.0), 1)])
def test_penalties_in_a_conditional_step(tmp_path, request, loss, extra, replicas):
  """In the distributed step the penalty is reported, finite and moves D: its weight changes the D update, and leaves
  G's unchanged (nor does computing it touch G, e.g. its BatchNorm statistics)."""
  strategy = request.getfixturevalue("mirrored2" if replicas == 2 else "one_device")
  cfg, state, it, train = _setup(tmp_path, strategy, arch="cgan_mlp", loss=loss, latent_dim=8, **extra)
  metrics = train(it, tf.constant(2)).means()
  penalty = "gradient_penalty" if "gp_weight" in extra else "r1_penalty"
  assert penalty in metrics
  for name, value in metrics.items():
    assert np.isfinite(value), name
  # One more step from the state reached, with the penalty's weight 0 and as configured: the trainer's replica_step
  # on the same batch and step (eagerly: no second trainer to trace), each from the same restored variables.
  (weight_name, weight), = extra.items()
  batch, step = next(it), state.step.read_value()
  checkpoint = checkpoint_lib.make_checkpoint(state)
  start = checkpoint.write(str(tmp_path / "start"))
  d_start = _flat(state.gan.discriminator.get_weights())
  after = []
  for w in (0.0, weight):
    checkpoint.read(start).assert_consumed()
    step_cfg = cfg.replace(**{weight_name: w})
    strategy.run(lambda b, c=step_cfg: train_step_lib.replica_step(c, state, (b,), step), args=(batch,))
    after.append((state.gan.generator.get_weights(), _flat(state.gan.discriminator.get_weights())))
  (g_without, d_without), (g_with, d_with) = after
  # G bitwise: the same ops on the same values. What fails is a penalty that runs G again (its BatchNorm statistics
  # move); not one added to G's loss: this D is piecewise linear, so a penalty has no gradient with respect to G.
  for a, b in zip(g_without, g_with):
    np.testing.assert_array_equal(a, b)
  # The penalty changes D's update by 22% (gp, 10) and 4.4% (r1, 1) of its norm; a penalty that was multiplied away
  # changes it by exactly 0, one that barely acts by under 1%.
  update = d_without - d_start
  assert np.linalg.norm(d_with - d_without) > 1e-2 * np.linalg.norm(update) > 0


def _flat(weights) -> np.ndarray:
  """A model's weights (get_weights) as one vector."""
  return np.concatenate([w.ravel() for w in weights])


def _conditional_forward(cfg):
  """A cgan_mlp (no dropout or BatchNorm in D: every D call is the same function), a batch and one forward pass.

  Its weights come from a fixed seed: drawn from whatever state earlier tests of the process left, D's mean outputs
  on reals and fakes were, in one order of the tests, 4e-5 apart, and the check that tells them apart failed."""
  keras.utils.set_random_seed(11)
  gan = models.build(cfg, num_classes=10)
  batch = {"images": tf.random.stateless_uniform([cfg.batch_size, 28, 28, 1], seed=[1, 2], minval=-1.0, maxval=1.0),
           "labels": tf.range(cfg.batch_size, dtype=tf.int32) % 10}
  inputs = train_step_lib.step_inputs(cfg, gan, tf.constant(3, tf.int64), 0)
  return gan, batch, train_step_lib.forward(gan, batch, inputs)


def _grad_norms(gan, images, labels):
  """float64 [B]: ||dD(x, y)/dx|| per example, computed here independently of gan_dist.losses."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    out = tf.reduce_sum(gan.discriminate(images, labels, training=True))
  grads = tape.gradient(out, images).numpy().reshape(images.shape[0], -1).astype(np.float64)
  return np.sqrt(np.sum(grads ** 2, axis=1))


@pytest.mark.parametrize("loss,weights", [("wasserstein", dict(gp_weight=10.0)), ("hinge", dict(r1_weight=3.0)),
                                          ("non_saturating", dict(gp_weight=2.0, r1_weight=0.5))])
def test_d_loss_is_the_loss_plus_the_weighted_penalties_at_the_real_labels(loss, weights):
  # An odd batch: a share of correct calls is never 1/2, so a flipped comparison (its complement) is another number.
  cfg = helpers.config_values(arch="cgan_mlp", loss=loss, batch_size=7, latent_dim=8, **weights)
  gan, batch, fwd = _conditional_forward(cfg)
  value, metrics = train_step_lib.d_loss(cfg, gan, fwd)
  d_vec, g_vec = losses.get(loss)(fwd.real_logits, fwd.fake_logits)
  expected = d_vec.numpy().astype(np.float64)
  if cfg.gp_weight:
    alpha = fwd.inputs.alpha
    interpolates = alpha * batch["images"] + (1.0 - alpha) * fwd.fake_images
    gp = (_grad_norms(gan, interpolates, batch["labels"]) - 1.0) ** 2
    assert metrics["gradient_penalty"].numpy() == pytest.approx(gp.mean(), rel=1e-4)
    # The real labels are the ones bound: with the fake labels the penalty is another number.
    other = (_grad_norms(gan, interpolates, fwd.inputs.fake_labels) - 1.0) ** 2
    assert abs(other.mean() - gp.mean()) > 1e-3 * gp.mean()
    expected += cfg.gp_weight * gp
  if cfg.r1_weight:
    r1 = _grad_norms(gan, batch["images"], batch["labels"]) ** 2
    assert metrics["r1_penalty"].numpy() == pytest.approx(r1.mean(), rel=1e-4)
    expected += 0.5 * cfg.r1_weight * r1
  assert value.numpy() == pytest.approx(expected.mean(), rel=1e-4)
  assert metrics["d_loss"] is value
  g_value, g_metrics = train_step_lib.g_loss(cfg, fwd)
  assert g_value.numpy() == pytest.approx(float(np.mean(g_vec)), rel=1e-5) and g_metrics == {"g_loss": g_value}
  # D's accuracy and outputs: shares of the global-batch mean, here one device, so the plain means.
  real, fake = fwd.real_logits.numpy().ravel(), fwd.fake_logits.numpy().ravel()
  assert metrics["d_real_accuracy"].numpy() == pytest.approx(np.mean(real > 0))
  assert metrics["d_fake_accuracy"].numpy() == pytest.approx(np.mean(fake < 0))
  real_output, fake_output = np.mean(1 / (1 + np.exp(-real))), np.mean(1 / (1 + np.exp(-fake)))
  assert metrics["d_real_output"].numpy() == pytest.approx(real_output, rel=1e-5)
  assert metrics["d_fake_output"].numpy() == pytest.approx(fake_output, rel=1e-5)
  assert abs(real_output - fake_output) > 1e-3  # Outputs swapped between real and fake would fail the two above.


def _softmax_cross_entropy(labels, logits):
  """float64 [B], computed here with NumPy."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(len(labels)), np.asarray(labels)]


def test_class_loss_adds_the_weighted_cross_entropy_of_real_labels_to_d_and_of_asked_labels_to_g():
  """--class_loss_weight: D's loss + w * CE(D's class head on the reals, their labels); G's loss + w * CE(on the
  fakes, the labels G was asked for); accuracies the fractions of argmax hits."""
  cfg = helpers.config_values(arch="cresnet", loss="hinge", batch_size=6, latent_dim=8, g_channels=4, d_channels=4,
                              image_size=32, class_loss_weight=0.7)
  gan = models.build(cfg, num_classes=3)
  batch = {"images": tf.random.stateless_uniform([6, 32, 32, 3], seed=[1, 2], minval=-1.0, maxval=1.0),
           "labels": tf.range(6, dtype=tf.int32) % 3}
  fwd = train_step_lib.forward(gan, batch, train_step_lib.step_inputs(cfg, gan, tf.constant(3, tf.int64), 0))
  d_vec, g_vec = losses.get("hinge")(fwd.real_logits, fwd.fake_logits)
  real_ce = _softmax_cross_entropy(batch["labels"].numpy(), fwd.real_class_logits)
  fake_labels = fwd.inputs.fake_labels.numpy()
  fake_ce = _softmax_cross_entropy(fake_labels, fwd.fake_class_logits)
  value, metrics = train_step_lib.d_loss(cfg, gan, fwd)
  assert value.numpy() == pytest.approx(np.mean(d_vec.numpy() + 0.7 * real_ce), rel=1e-5)
  assert metrics["d_class_loss"].numpy() == pytest.approx(real_ce.mean(), rel=1e-5)
  hits = np.argmax(fwd.real_class_logits.numpy(), axis=1) == batch["labels"].numpy()
  assert metrics["d_class_accuracy"].numpy() == pytest.approx(hits.mean())
  g_value, g_metrics = train_step_lib.g_loss(cfg, fwd)
  assert g_value.numpy() == pytest.approx(np.mean(g_vec.numpy() + 0.7 * fake_ce), rel=1e-5)
  assert g_metrics["g_class_loss"].numpy() == pytest.approx(fake_ce.mean(), rel=1e-5)
  hits = np.argmax(fwd.fake_class_logits.numpy(), axis=1) == fake_labels
  assert g_metrics["g_class_accuracy"].numpy() == pytest.approx(hits.mean())
  assert abs(value.numpy() - np.mean(d_vec.numpy())) > 0.1  # The term is there, not a rounding.


def test_class_loss_leaves_out_real_images_without_a_class_and_their_accuracy_counts_only_labelled_ones():
  """Root images of a class folder tree have label -1: D's class head is neither scored nor counted on them (this
  crashed in the cross-entropy op before), and d_class_accuracy is the share of hits among the labelled images."""
  cfg = helpers.config_values(arch="cresnet", loss="hinge", batch_size=6, latent_dim=8, g_channels=4, d_channels=4,
                              image_size=32, class_loss_weight=0.7)
  gan = models.build(cfg, num_classes=3)
  labels = np.array([0, -1, 1, 2, -1, 0], np.int32)
  batch = {"images": tf.random.stateless_uniform([6, 32, 32, 3], seed=[1, 2], minval=-1.0, maxval=1.0),
           "labels": tf.constant(labels)}
  fwd = train_step_lib.forward(gan, batch, train_step_lib.step_inputs(cfg, gan, tf.constant(3, tf.int64), 0))
  d_vec, _ = losses.get("hinge")(fwd.real_logits, fwd.fake_logits)
  known = labels >= 0
  real_ce = np.where(known, _softmax_cross_entropy(np.maximum(labels, 0), fwd.real_class_logits), 0.0)
  with tf.GradientTape() as tape:
    fwd = train_step_lib.forward(gan, batch, train_step_lib.step_inputs(cfg, gan, tf.constant(3, tf.int64), 0))
    value, metrics = train_step_lib.d_loss(cfg, gan, fwd)
  grads = tape.gradient(value, gan.discriminator.trainable_variables)
  assert all(np.all(np.isfinite(g.numpy())) for g in grads if g is not None)
  assert value.numpy() == pytest.approx(np.mean(d_vec.numpy() + 0.7 * real_ce), rel=1e-5)
  assert metrics["d_class_loss"].numpy() == pytest.approx(real_ce.mean(), rel=1e-5)
  assert metrics["d_class_labelled"].numpy() == pytest.approx(4 / 6)
  predicted = np.argmax(fwd.real_class_logits.numpy(), axis=1)
  sums = {name: float(value.numpy()) for name, value in metrics.items()}
  means = train_step_lib.means(sums, 1)
  assert means["d_class_accuracy"] == pytest.approx(np.mean(predicted[known] == labels[known]))
  # Over steps: the hits of all labelled images over all labelled images; none labelled is NaN, not 0.
  assert train_step_lib.means({"d_class_accuracy": 0.5, "d_class_labelled": 1.5}, 2)["d_class_accuracy"] == (
      pytest.approx(1 / 3))
  assert np.isnan(train_step_lib.means({"d_class_accuracy": 0.0, "d_class_labelled": 0.0}, 2)["d_class_accuracy"])


def test_mode_seeking_pairs_the_fake_labels_and_adds_the_weighted_msgan_term_to_g_only():
  """--mode_seeking_weight: rows 2k and 2k+1 ask for one label; G's loss + w * 1 / (mean|x1 - x2| / mean|z1 - z2|
  + 1e-5) per pair (NumPy here), D's loss unchanged."""
  cfg = helpers.config_values(arch="cresnet", loss="hinge", batch_size=8, latent_dim=8, g_channels=4, d_channels=4,
                              image_size=32, mode_seeking_weight=0.5)
  gan = models.build(cfg, num_classes=3)
  inputs = train_step_lib.step_inputs(cfg, gan, tf.constant(3, tf.int64), 0)
  labels = inputs.fake_labels.numpy()
  assert labels.shape == (8,) and (labels[0::2] == labels[1::2]).all() and len(set(labels)) > 1
  batch = {"images": tf.random.stateless_uniform([8, 32, 32, 3], seed=[1, 2], minval=-1.0, maxval=1.0),
           "labels": tf.range(8, dtype=tf.int32) % 3}
  fwd = train_step_lib.forward(gan, batch, inputs)
  d_vec, g_vec = losses.get("hinge")(fwd.real_logits, fwd.fake_logits)
  x = fwd.generated.numpy().reshape(4, 2, -1).astype(np.float64)
  z = inputs.noise.numpy().reshape(4, 2, -1).astype(np.float64)
  term = 1.0 / (np.abs(x[:, 0] - x[:, 1]).mean(1) / np.abs(z[:, 0] - z[:, 1]).mean(1) + 1e-5)
  g_value, g_metrics = train_step_lib.g_loss(cfg, fwd)
  assert g_value.numpy() == pytest.approx(np.mean(g_vec.numpy()) + 0.5 * term.mean(), rel=1e-5)
  assert g_metrics["g_mode_seeking"].numpy() == pytest.approx(term.mean(), rel=1e-5)
  assert 0.5 * term.mean() > 0.01  # The term is there, not a rounding.
  d_value, _ = train_step_lib.d_loss(cfg, gan, fwd)
  assert d_value.numpy() == pytest.approx(np.mean(d_vec.numpy()), rel=1e-6)
  assert "g_mode_seeking" in train_step_lib.metric_names(cfg)


def test_step_inputs_are_the_global_draw_and_labels_are_in_range():
  cfg = helpers.config_values(arch="cgan_mlp", batch_size=16, latent_dim=8, gp_weight=1.0)
  gan = models.build(cfg, num_classes=10)
  a = train_step_lib.step_inputs(cfg, gan, tf.constant(5, tf.int64), 0)
  b = train_step_lib.step_inputs(cfg, gan, tf.constant(5, tf.int64), 1)
  assert a.noise.shape == (16, 8) and a.alpha.shape == (16, 1, 1, 1) and a.fake_labels.dtype == tf.int32
  assert 0 <= int(tf.reduce_min(a.fake_labels)) and int(tf.reduce_max(a.fake_labels)) < 10
  assert len(np.unique(a.fake_labels.numpy())) > 3
  assert not np.allclose(a.noise, b.noise)  # Another batch draw of the same step draws other noise.
  unconditional = models.build(helpers.config_values(arch="mlp", latent_dim=8), 0)
  zeros = train_step_lib.step_inputs(cfg.replace(gp_weight=0.0), unconditional, tf.constant(5, tf.int64), 0)
  assert zeros.alpha is None and not np.any(zeros.fake_labels.numpy())


def test_least_squares_accuracies_outputs_and_ada_rt_are_taken_at_its_midpoint():
  """LSGAN regresses D(real) to 1 and D(fake) to 0: at 0 every real would count as recognised, and ADA's r_t =
  E[sign(D(real))] would be 1 for a D that cannot tell real from fake at all (outputs 1/2), pushing p to 1."""
  cfg = helpers.config_values(arch="mlp", loss="least_squares", batch_size=4, augment="ada")
  real = tf.constant([[0.9], [0.7], [0.3], [0.2]])
  fake = tf.constant([[0.1], [0.2], [0.4], [0.8]])
  inputs = train_step_lib.StepInputs(tf.zeros([4, 8]), tf.zeros([4], tf.int32), None)
  fwd = train_step_lib.Forward(None, tf.zeros([4], tf.int32), None, real, fake, inputs)
  _, metrics = train_step_lib.d_loss(cfg, None, fwd)
  assert metrics["d_real_accuracy"].numpy() == pytest.approx(0.5)
  assert metrics["d_fake_accuracy"].numpy() == pytest.approx(0.75)
  assert metrics["d_real_output"].numpy() == pytest.approx(0.525)  # D's own output, not a sigmoid of it.
  assert metrics["d_fake_output"].numpy() == pytest.approx(0.375)
  assert train_step_lib.ada_rt(cfg, real).numpy() == pytest.approx(0.0)
  confused = tf.fill([4, 1], 0.5 - 1e-3)  # A D at chance: r_t near -1 or 0, never the 1 that raises p.
  assert train_step_lib.ada_rt(cfg, confused).numpy() == pytest.approx(-1.0)
  # The logistic losses keep 0, their logit's midpoint.
  logistic = cfg.replace(loss="non_saturating")
  assert train_step_lib.ada_rt(logistic, real).numpy() == pytest.approx(1.0)
