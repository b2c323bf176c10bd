"""Every GAN loss against hand-computed values; the gradient penalties against discriminators of known gradient."""

import math

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import losses

# Two examples: real logits 0 and 2, fake logits -1 and 3. softplus(x) = log(1 + e^x):
# softplus(0) = ln 2 = 0.693147, softplus(-2) = 0.126928, softplus(-1) = 0.313262, softplus(3) = 3.048587,
# softplus(1) = 1.313262, softplus(-3) = 0.048587.
REAL = [[0.0], [2.0]]
FAKE = [[-1.0], [3.0]]
EXPECTED = {
    # d = softplus(-real) + softplus(fake), g = softplus(-fake).
    "non_saturating": ([0.693147 + 0.313262, 0.126928 + 3.048587], [1.313262, 0.048587]),
    # d as above, g = log(1 - sigmoid(fake)) = -softplus(fake).
    "minimax": ([0.693147 + 0.313262, 0.126928 + 3.048587], [-0.313262, -3.048587]),
    # d = (real - 1)^2 / 2 + fake^2 / 2, g = (fake - 1)^2 / 2.
    "least_squares": ([0.5 + 0.5, 0.5 + 4.5], [2.0, 2.0]),
    # d = relu(1 - real) + relu(1 + fake), g = -fake.
    "hinge": ([1.0 + 0.0, 0.0 + 4.0], [1.0, -3.0]),
    # d = fake - real, g = -fake.
    "wasserstein": ([-1.0, 1.0], [1.0, -3.0]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values(name):
  d_loss, g_loss = losses.get(name)(tf.constant(REAL), tf.constant(FAKE))
  assert d_loss.shape == (2,) and g_loss.shape == (2,)  # Per example: the train step reduces.
  np.testing.assert_allclose(d_loss.numpy(), EXPECTED[name][0], atol=2e-6)
  np.testing.assert_allclose(g_loss.numpy(), EXPECTED[name][1], atol=2e-6)


def test_every_loss_is_tested_and_float16_logits_are_accepted():
  assert set(losses.LOSSES) == set(EXPECTED)
  d_loss, _ = losses.non_saturating(tf.constant(REAL, tf.float16), tf.constant(FAKE, tf.float16))
  assert d_loss.dtype == tf.float32


def test_unknown_loss_lists_the_known_ones():
  with pytest.raises(ValueError, match="hinge"):
    losses.get("no_such_loss")


# A linear discriminator D(x) = sum(w * x) has input gradient w everywhere: ||w|| = sqrt(9 + 16) = 5.
W = tf.constant([[[3.0], [0.0]], [[0.0], [4.0]]])  # [2, 2, 1]


def _linear_d(w):
  return lambda images: tf.reduce_sum(images * w, axis=[1, 2, 3])[:, None]


def _images(seed, n=3):
  return tf.random.stateless_uniform([n, 2, 2, 1], seed=[seed, 0], minval=-1.0, maxval=1.0)


def test_gradient_penalty_of_a_linear_discriminator():
  alpha = tf.constant([0.0, 0.3, 1.0])[:, None, None, None]
  gp = losses.gradient_penalty(_linear_d(W), _images(1), _images(2), alpha)
  np.testing.assert_allclose(gp.numpy(), [(5.0 - 1.0) ** 2] * 3, rtol=1e-5)
  # ||w|| = 1: the penalty vanishes.
  gp = losses.gradient_penalty(_linear_d(W / 5.0), _images(1), _images(2), alpha)
  np.testing.assert_allclose(gp.numpy(), [0.0] * 3, atol=1e-6)


def test_gradient_penalty_is_taken_at_the_interpolates():
  # D(x) = sum(x^2) has gradient 2x, so the penalty is (2 ||alpha real + (1 - alpha) fake|| - 1)^2.
  real, fake = _images(3), _images(4)
  alpha = tf.constant([0.0, 0.25, 1.0])[:, None, None, None]
  gp = losses.gradient_penalty(lambda x: tf.reduce_sum(tf.square(x), axis=[1, 2, 3])[:, None], real, fake, alpha)
  x_hat = (alpha * real + (1.0 - alpha) * fake).numpy().reshape(3, -1)
  expected = [(2.0 * math.sqrt(float(np.sum(row ** 2))) - 1.0) ** 2 for row in x_hat]
  np.testing.assert_allclose(gp.numpy(), expected, rtol=1e-5)


def test_r1_penalty_of_a_linear_discriminator():
  r1 = losses.r1_penalty(_linear_d(W), _images(5))
  np.testing.assert_allclose(r1.numpy(), [25.0] * 3, rtol=1e-6)  # ||w||^2.
  # D(x) = sum(x^2): ||2x||^2 = 4 ||x||^2 per example.
  real = _images(6)
  r1 = losses.r1_penalty(lambda x: tf.reduce_sum(tf.square(x), axis=[1, 2, 3])[:, None], real)
  np.testing.assert_allclose(r1.numpy(), 4.0 * np.sum(real.numpy().reshape(3, -1) ** 2, axis=1), rtol=1e-5)


def test_mode_seeking_is_large_for_a_collapsed_pair_and_shared_by_both_rows():
  z = tf.constant([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])  # mean|z1 - z2|: 1.5 and 2.
  same = tf.zeros([2, 4, 4, 3])
  apart = tf.concat([tf.zeros([1, 4, 4, 3]), tf.fill([1, 4, 4, 3], 0.6)], 0)  # mean|x1 - x2| = 0.6.
  found = losses.mode_seeking(tf.concat([same, apart], 0), z).numpy()
  np.testing.assert_allclose(found, [1e5, 1e5, 1 / (0.3 + 1e-5), 1 / (0.3 + 1e-5)], rtol=1e-5)
  assert found.dtype == np.float32


def test_decision_threshold_and_d_output_of_each_loss():
  logits = tf.constant([[-2.0], [0.25], [0.75]])
  for name in losses.LOSSES:
    threshold = losses.decision_threshold(name)
    if name == "least_squares":  # Targets 0 (fake) and 1 (real), output read as it is.
      assert threshold == 0.5
      np.testing.assert_allclose(losses.d_output(name, logits), [-2.0, 0.25, 0.75])
    else:
      assert threshold == 0.0
      np.testing.assert_allclose(losses.d_output(name, logits), tf.sigmoid([-2.0, 0.25, 0.75]), rtol=1e-6)
    assert losses.d_output(name, logits).shape == (3,)
