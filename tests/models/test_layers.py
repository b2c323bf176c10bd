"""models/layers.py, the ResNet recipe's layers: SpectralNormalization (sigma against an SVD, u updated in training
only, the paper's gradient, float32 u under mixed_float16, replicas kept in agreement), SelfAttention,
ConditionalBatchNorm, and their config round trips."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import precision
from gan_dist.models import layers as gan_layers
from tests import helpers


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _matrix(sn):
  """The wrapped kernel as the matrix [in, out] that spectral normalisation normalises (numpy)."""
  kernel = sn.kernel_variable.numpy()
  if isinstance(sn.layer, keras.layers.Conv2DTranspose):
    kernel = kernel.transpose(0, 1, 3, 2)
  return kernel.reshape(-1, kernel.shape[-1])


def _converged(sn, x, calls=60):
  """`sn` after `calls` training calls (one power iteration each)."""
  keras.utils.set_random_seed(1)
  for _ in range(calls):
    sn(x, training=True)
  return sn


@pytest.mark.parametrize("make_layer,shape", [
    (lambda: keras.layers.Dense(24), (3, 16)),
    (lambda: keras.layers.Conv2D(12, 3, padding="same"), (2, 6, 6, 5)),  # Kernel [3, 3, 5, 12] as [45, 12].
], ids=["dense", "conv2d"])
def test_sigma_is_the_largest_singular_value(make_layer, shape):
  # The layer is made here, after the seed: made at collection, its kernel (and the gap between its two largest
  # singular values, which sets how fast the power iteration converges) would depend on the test order.
  keras.utils.set_random_seed(0)
  sn = _converged(gan_layers.SpectralNormalization(make_layer()), _x(*shape), calls=300)
  top = np.linalg.svd(_matrix(sn), compute_uv=False)[0]
  normalized = sn.normalized_kernel().numpy()
  sigma = sn.kernel_variable.numpy() / normalized
  np.testing.assert_allclose(sigma, top, rtol=1e-4)  # The same sigma divides every entry.
  kernel = normalized.reshape(-1, normalized.shape[-1])
  assert np.linalg.svd(kernel, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("make_layer,x", [
    (lambda: keras.layers.Dense(7, activation="relu"), _x(3, 5)),
    (lambda: keras.layers.Conv2D(6, 3, strides=2, padding="same"), _x(2, 5, 5, 4)),
    (lambda: keras.layers.Conv2DTranspose(6, 4, strides=2, padding="same"), _x(2, 5, 5, 4)),
    (lambda: keras.layers.Embedding(9, 5), np.array([[1, 2], [3, 8]])),
], ids=["dense", "conv2d", "conv2d_transpose", "embedding"])
def test_the_forward_pass_is_the_layer_with_the_normalized_kernel(make_layer, x):
  """Each supported layer computes what Keras' own layer computes with W / sigma as its kernel (the export)."""
  keras.utils.set_random_seed(0)
  layer = make_layer()  # After the seed: made at collection, its weights would depend on the test order.
  sn = gan_layers.SpectralNormalization(layer)
  out = sn(x, training=True)
  reference = type(layer).from_config(layer.get_config())
  reference(x)
  normalized = sn.normalized_kernel().numpy()
  sigma = float((sn.kernel_variable.numpy() / normalized).flat[0])
  # One power iteration from a random u: sigma = u'^T W v for unit u', v, a lower bound of the largest singular
  # value that may still be far below it (tests/models/test_layers.py::test_sigma_is_the_largest_singular_value
  # shows it converges).
  assert 0.0 < sigma <= np.linalg.svd(_matrix(sn), compute_uv=False)[0] * (1 + 1e-5)
  reference.set_weights([normalized] + [w.numpy() for w in layer.weights[1:]])
  np.testing.assert_allclose(sn(x), reference(x), rtol=1e-5, atol=1e-6)
  assert out.shape == reference(x).shape


def test_u_is_a_float32_non_trainable_weight_updated_only_in_training():
  keras.utils.set_random_seed(0)
  sn = gan_layers.SpectralNormalization(keras.layers.Dense(4))
  x = _x(2, 3)
  sn(x)
  assert sn.u.shape == (1, 4) and sn.u.dtype == "float32" and not sn.u.trainable
  assert [v.path for v in sn.non_trainable_weights] == [sn.u.path]
  assert {id(v) for v in sn.trainable_weights} == {id(sn.layer.kernel), id(sn.layer.bias)}
  before = sn.u.numpy().copy()
  sn(x, training=False)
  sn(x)
  np.testing.assert_array_equal(sn.u.numpy(), before)
  sn(x, training=True)
  assert not np.allclose(sn.u.numpy(), before)
  # One power iteration from the stored u (normalised): v = l2(u W^T), u' = l2(v W).
  w = sn.layer.kernel.numpy().astype(np.float64)
  u = before / np.linalg.norm(before)
  v = u @ w.T / np.linalg.norm(u @ w.T)
  np.testing.assert_allclose(sn.u.numpy(), v @ w / np.linalg.norm(v @ w), rtol=1e-5)


def test_the_gradient_reaches_the_raw_kernel_through_sigma():
  """d/dW of sum(G * W/sigma) with sigma = v^T W u and u, v constants (the paper): G/sigma - <G, W>/sigma^2 v u^T."""
  keras.utils.set_random_seed(0)
  sn = gan_layers.SpectralNormalization(keras.layers.Dense(5, use_bias=False))
  sn(_x(1, 4))
  g = _x(4, 5, seed=1)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(sn.normalized_kernel() * g)
  (grad,) = tape.gradient(loss, [sn.layer.kernel])
  w = sn.layer.kernel.numpy().astype(np.float64)
  u = sn.u.numpy()[0] / np.linalg.norm(sn.u.numpy())
  v = w @ u / np.linalg.norm(w @ u)
  sigma = v @ w @ u
  expected = g / sigma - np.sum(g * w) / sigma ** 2 * np.outer(v, u)
  np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-4, atol=1e-6)
  # Through the layer too: the optimizer's variables are the raw kernel (and bias), u is not among them.
  with tf.GradientTape() as tape:
    out = tf.reduce_sum(sn(_x(3, 4), training=True) ** 2)
  grads = tape.gradient(out, sn.trainable_variables)
  assert len(grads) == 1 and float(tf.reduce_max(tf.abs(grads[0]))) > 0


def test_mixed_float16_keeps_u_and_sigma_float32():
  keras.utils.set_random_seed(0)
  with precision.policy_scope("mixed_float16"):
    sn = gan_layers.SpectralNormalization(keras.layers.Conv2D(8, 3, padding="same"))
  x = _x(2, 4, 4, 3)
  assert sn(x).dtype == tf.float16 and sn.compute_dtype == "float16"
  assert sn.u.dtype == "float32" and sn.layer.kernel.dtype == "float32"
  before = sn.u.numpy().copy()
  sn(x, training=True)  # Inside the call Keras would read the kernel as float16: the update must use float32.
  w = _matrix(sn).astype(np.float64)
  u = before / np.linalg.norm(before)
  v = u @ w.T / np.linalg.norm(u @ w.T)
  np.testing.assert_allclose(sn.u.numpy(), v @ w / np.linalg.norm(v @ w), rtol=1e-5)
  assert sn.normalized_kernel().dtype == tf.float32


def _replica_values(var):
  inner = getattr(var, "value", var)
  return [v.numpy() for v in getattr(inner, "values", (inner,))]


def test_u_stays_identical_on_two_replicas(mirrored2):
  """u's replica-context assignment writes the replicas' mean to both (aggregation mean): even copies put out of
  step by hand agree again after one training call, while the replicas see different data and the kernel moves."""
  keras.utils.set_random_seed(0)
  with mirrored2.scope():
    sn = gan_layers.SpectralNormalization(keras.layers.Dense(6))
    sn.build((None, 5))
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(sn.trainable_variables)
  assert sn.u.aggregation == "mean"
  copies = getattr(sn.u.value, "values")
  copies[1].assign(_x(1, 6, seed=3))
  assert not np.allclose(*_replica_values(sn.u))
  x = tf.constant(_x(4, 5))
  dist = mirrored2.experimental_distribute_values_from_function(
      lambda ctx: x[2 * ctx.replica_id_in_sync_group:2 * ctx.replica_id_in_sync_group + 2])

  def replica_step(batch):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(sn(batch, training=True) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, sn.trainable_variables), sn.trainable_variables))

  step = tf.function(lambda: mirrored2.run(replica_step, args=(dist,)))
  seen = []
  for _ in range(3):
    step()
    first, second = _replica_values(sn.u)
    np.testing.assert_array_equal(first, second)
    seen.append(first)
  assert not np.allclose(seen[0], seen[-1])


def test_bad_wrapped_layers_and_iterations_are_refused():
  with pytest.raises(ValueError, match="wraps Dense, Conv2D, Conv2DTranspose or Embedding layers, not LayerNorm"):
    gan_layers.SpectralNormalization(keras.layers.LayerNormalization())
  with pytest.raises(ValueError, match="power_iterations"):
    gan_layers.SpectralNormalization(keras.layers.Dense(2), power_iterations=-1)


def test_configs_round_trip():
  sn = gan_layers.SpectralNormalization(keras.layers.Conv2D(3, 1, name="inner"), power_iterations=2, name="sn")
  sa = gan_layers.SelfAttention(16, name="attention")
  cbn = gan_layers.ConditionalBatchNorm(synchronized=True, momentum=0.9, epsilon=1e-4, name="cbn")
  for layer in (sn, sa, cbn):
    config = layer.get_config()
    assert type(layer).from_config(copy.deepcopy(config)).get_config() == config  # Keras pops from it.
    # Registered: a saved config names the class, and deserialising it rebuilds the same layer.
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is type(layer) and again.get_config() == config
  assert sn.layer.name == "inner" and sn.power_iterations == 2


def test_power_iteration_vectors_of_a_model():
  inputs = keras.Input((4, 4, 8))
  x = gan_layers.sn_conv(8, 3)(inputs)
  x = gan_layers.SelfAttention(8)(x)
  model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
  vectors = gan_layers.power_iteration_vectors(model)
  assert sorted(tuple(v.shape) for v in vectors) == [(1, 1), (1, 1), (1, 4), (1, 8), (1, 8)]
  assert {id(v) for v in vectors} <= {id(v) for v in model.non_trainable_weights}


def test_self_attention_is_the_identity_at_gamma_0_and_pools_large_maps():
  keras.utils.set_random_seed(0)
  x = _x(2, 8, 8, 16)
  sa = gan_layers.SelfAttention(16)
  np.testing.assert_array_equal(sa(x, training=True), x)
  assert sa.pool and sa.gamma.numpy() == 0.0 and sa.gamma.trainable
  assert [c.layer.filters for c in (sa.conv_f, sa.conv_g, sa.conv_h, sa.conv_o)] == [2, 2, 8, 16]
  sa.gamma.assign(1.0)
  out = sa(x)
  assert out.shape == x.shape and not np.allclose(out, x)
  small = gan_layers.SelfAttention(16)
  assert small(_x(2, 4, 4, 16)).shape == (2, 4, 4, 16) and not small.pool
  # Every position attends over the whole (pooled) map: changing one corner of the input changes the far corner.
  small.gamma.assign(1.0)
  y = _x(1, 4, 4, 16)
  z = y.copy()
  z[0, 0, 0] += 3.0
  assert not np.allclose(small(y)[0, 3, 3], small(z)[0, 3, 3])


def test_self_attention_under_mixed_float16():
  with precision.policy_scope("mixed_float16"):
    sa = gan_layers.SelfAttention(16)
  sa.build((None, 8, 8, 16))
  sa.gamma.assign(1.0)
  out = sa(_x(2, 8, 8, 16), training=True)
  assert out.dtype == tf.float16 and np.isfinite(out.numpy()).all()
  assert all(v.dtype == "float32" for v in gan_layers.power_iteration_vectors(sa))


def test_conditional_batch_norm_uses_the_condition():
  keras.utils.set_random_seed(0)
  cbn = gan_layers.conditional_batch_norm(helpers.config_values(sync_batchnorm=True))
  assert cbn.synchronized and cbn.norm.synchronized and not cbn.norm.center and not cbn.norm.scale
  x = _x(4, 3, 3, 5)
  c = np.repeat(_x(1, 6, seed=1), 4, axis=0)
  other = np.repeat(_x(1, 6, seed=2), 4, axis=0)
  out = cbn([x, c], training=True)
  assert out.shape == x.shape and not np.allclose(out, cbn([x, other], training=True))
  # A zero condition leaves plain BatchNorm without scale and offset: (x - mean) / sqrt(var + eps).
  plain = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + cbn.epsilon)
  np.testing.assert_allclose(cbn([x, np.zeros_like(c)], training=True), plain, rtol=1e-4, atol=1e-5)
  # Per example: x * (1 + gain(c)) + bias(c) with gain and bias spectrally normalised projections of c (u frozen,
  # so that the call divides by the sigma of normalized_kernel()).
  cbn.gain.power_iterations = cbn.bias.power_iterations = 0
  gain = c @ cbn.gain.normalized_kernel().numpy()
  bias = c @ cbn.bias.normalized_kernel().numpy()
  np.testing.assert_allclose(cbn([x, c], training=True), plain * (1 + gain[:, None, None]) + bias[:, None, None],
                             rtol=1e-4, atol=1e-5)
  assert not gan_layers.conditional_batch_norm(helpers.config_values(sync_batchnorm=False)).synchronized


def test_fan_out_copies_and_sums_the_gradients():
  x = tf.constant(_x(2, 3))
  fan = gan_layers.FanOut(3)
  with tf.GradientTape() as tape:
    tape.watch(x)
    copies = fan(x)
    loss = sum(float(i + 1) * tf.reduce_sum(c) for i, c in enumerate(copies))
  assert len(copies) == 3 and all(np.array_equal(c, x) for c in copies)
  np.testing.assert_array_equal(tape.gradient(loss, x), np.full((2, 3), 6.0, np.float32))
  assert fan.compute_output_shape((None, 3)) == [(None, 3)] * 3
  assert gan_layers.FanOut.from_config(fan.get_config()).copies == 3


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nearest_upsampling_is_keras_with_fewer_ops(dtype):
  """layers.UpSampling2D repeats each pixel as Keras' does, bit for bit, with the same gradient up to the order in
  which it sums the 6 copies of a pixel, in a fraction of Keras' ops."""
  x = tf.random.stateless_normal([2, 5, 3, 4], seed=[1, 2], dtype=dtype)
  found = []
  for layer in (keras.layers.UpSampling2D((2, 3), dtype=dtype), gan_layers.UpSampling2D((2, 3), dtype=dtype)):
    @tf.function
    def forward_and_gradient(x, layer=layer):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        y32 = tf.cast(y, tf.float32)  # Weights that differ per output pixel: each gradient sums distinct values.
        loss = tf.reduce_sum(y32 * tf.reshape(tf.sin(tf.range(tf.size(y32), dtype=tf.float32)), tf.shape(y32)))
      return y, tape.gradient(loss, x)

    y, grad = forward_and_gradient(x)
    ops = len(forward_and_gradient.get_concrete_function(x).graph.get_operations())
    found.append((y.numpy(), grad.numpy(), ops))
  (y0, g0, keras_ops), (y1, g1, ops) = found
  assert y1.shape == (2, 10, 9, 4) and y1.dtype == dtype
  np.testing.assert_array_equal(y1, y0)
  # Sums of 6 terms of size <= |y| <= ~4 in two orders: a few roundings of that size apart (a pixel mapped wrongly
  # would miss by about |y|).
  np.testing.assert_allclose(g1, g0, rtol=0, atol=6 * 4 * float(np.finfo(dtype).eps))
  assert ops < keras_ops / 2, (ops, keras_ops)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nearest_upsampling_and_its_gradient_compile_with_xla(dtype):
  """--jit_compile compiles G's upsampling forward and backward (ResizeNearestNeighborGrad has no XLA kernel), with
  the values and gradient of the uncompiled layer."""
  layer = gan_layers.UpSampling2D((2, 3), dtype=dtype)
  x = tf.random.stateless_normal([2, 5, 3, 4], seed=[3, 4], dtype=dtype)
  weights = tf.reshape(tf.sin(tf.range(2 * 10 * 9 * 4, dtype=tf.float32)), [2, 10, 9, 4])

  def forward_and_gradient(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return y, tape.gradient(loss, x)

  y, grad = tf.function(forward_and_gradient, jit_compile=True, autograph=False)(x)
  y0, grad0 = tf.function(forward_and_gradient, autograph=False)(x)
  np.testing.assert_array_equal(y, y0)
  np.testing.assert_allclose(grad, grad0, rtol=0, atol=6 * float(np.finfo(dtype).eps))
  # Each input pixel's gradient is the sum of its 6 copies' weights.
  expected = tf.reduce_sum(tf.reshape(weights, [2, 5, 2, 3, 3, 4]), axis=[2, 4])
  np.testing.assert_allclose(tf.cast(grad, tf.float32), expected, rtol=0, atol=6 * float(np.finfo(dtype).eps))
