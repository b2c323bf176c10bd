"""sampling.py: deterministic inputs, class rows, slerp, uint8 conversion, grids, and batched generation."""

import math

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import errors
from gan_dist import models
from gan_dist import sampling
from tests import helpers


def test_noise_row_i_depends_on_the_seed_and_i_only():
  many = sampling.noise(40, 8, seed=7, truncation=0.0)
  assert many.shape == (40, 8) and many.dtype == np.float32
  np.testing.assert_array_equal(sampling.noise(3, 8, seed=7, truncation=0.0), many[:3])
  np.testing.assert_array_equal(sampling.noise(40, 8, seed=7, truncation=0.0), many)
  assert not np.allclose(sampling.noise(3, 8, seed=8, truncation=0.0), many[:3])
  assert abs(float(many.mean())) < 0.3 and 0.7 < float(many.std()) < 1.3  # Standard normal.


def test_truncation_maps_the_normal_onto_the_truncated_normal_monotonically():
  plain = sampling.noise(50000, 4, seed=5, truncation=0.0)
  np.testing.assert_array_equal(sampling.truncate(plain, 0.0), plain)  # 0: off.
  np.testing.assert_array_equal(sampling.noise(50000, 4, seed=5, truncation=0.0), plain)
  for t in (0.5, 1.0, 2.0):
    cut = sampling.noise(50000, 4, seed=5, truncation=t)
    assert cut.dtype == np.float32 and np.abs(cut).max() <= t
    # The truncated normal's variance, 1 - 2 t phi(t) / (2 Phi(t) - 1): 0.0805 (t=0.5), 0.291, 0.774 (t=2).
    phi = np.exp(-t * t / 2) / np.sqrt(2 * np.pi)
    variance = 1 - 2 * t * phi / math.erf(t / np.sqrt(2))
    assert abs(cut.var() / variance - 1) < 0.02, (t, cut.var(), variance)
    assert abs(float(cut.mean())) < 0.01 * t
    # Value for value: the same order (monotonic), so image i of a seed keeps its place at any truncation.
    order = np.argsort(plain[:, 0])
    assert (np.diff(cut[order, 0]) >= 0).all()
    # Row i still depends on (seed, i) only.
    np.testing.assert_array_equal(sampling.noise(3, 4, seed=5, truncation=t), cut[:3])
  # Values far in the tail (the CDF rounds to 0 or 1 in float64) stay inside the interval.
  np.testing.assert_array_equal(sampling.truncate(np.array([-40.0, 40.0, 0.0], np.float32), 0.5), [-0.5, 0.5, 0.0])


def test_labels_cycle_through_the_classes_or_hold_one():
  labels = sampling.labels(12, 10)
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, np.arange(12) % 10)
  np.testing.assert_array_equal(sampling.labels(5, 10)[:5], labels[:5])  # Row i independent of num.
  np.testing.assert_array_equal(sampling.labels(4, 10, label=3), [3, 3, 3, 3])
  unconditional = sampling.labels(4, 0)
  assert unconditional.dtype == np.int32 and not unconditional.any()
  with pytest.raises(errors.UserError, match=r"outside \[0, 10\)"):
    sampling.labels(2, 10, label=10)
  with pytest.raises(errors.UserError, match="not conditional"):
    sampling.labels(2, 0, label=0)
  np.testing.assert_array_equal(sampling.labels(2, 10, label=np.int64(3)), [3, 3])  # NumPy's integers are ids.
  # Not class ids: 3.7 drew class 3 and True class 1 (Python API), "3" was a TypeError.
  for label in (3.7, True, "3"):
    with pytest.raises(errors.UserError, match=r"must be a class id \(an integer\)"):
      sampling.labels(2, 10, label=label)


def test_noise_takes_a_whole_number_of_images_and_a_seed_numpy_accepts():
  for num in (0, -1, 2.0, True):  # 0 failed later, in the concatenation of no batches.
    with pytest.raises(errors.UserError, match="the number of images must be an integer >= 1"):
      sampling.noise(num, 4, seed=0, truncation=0.0)
  for seed in (-1, 2**32, 1.5, "0"):
    with pytest.raises(errors.UserError, match=r"a seed is an integer in \[0, 2\*\*32 - 1\]"):
      sampling.noise(1, 4, seed=seed, truncation=0.0)
  assert sampling.noise(1, 4, seed=2**32 - 1, truncation=0.0).shape == (1, 4)


def test_inputs_are_noise_and_labels():
  noise, labels = sampling.inputs(6, 5, 3, seed=1, label=2, truncation=0.0)
  np.testing.assert_array_equal(noise, sampling.noise(6, 5, 1, truncation=0.0))
  np.testing.assert_array_equal(labels, np.full(6, 2))


def test_inputs_and_class_rows_pass_the_truncation_on():
  np.testing.assert_array_equal(sampling.inputs(6, 5, 3, seed=1, truncation=0.7)[0], sampling.noise(6, 5, 1, 0.7))
  for classes in (10, 0):
    noise, _, _ = sampling.class_rows(20, 4, classes, seed=3, truncation=0.7)
    np.testing.assert_array_equal(noise, sampling.noise(20, 4, 3, 0.7))


def test_class_rows_one_row_per_class_or_near_square():
  noise, labels, rows = sampling.class_rows(25, 4, 10, seed=3, truncation=0.0)
  assert rows == 10 and noise.shape == (20, 4)  # 25 images -> 2 per class.
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
  np.testing.assert_array_equal(noise, sampling.noise(20, 4, 3, truncation=0.0))
  noise, labels, rows = sampling.class_rows(3, 4, 10, seed=3, truncation=0.0)  # Fewer images than classes: one of each.
  assert rows == 10 and len(noise) == 10
  noise, labels, rows = sampling.class_rows(7, 4, 0, seed=3, truncation=0.0)
  assert rows == 0 and noise.shape == (7, 4) and labels.dtype == np.int32 and not labels.any()
  np.testing.assert_array_equal(noise, sampling.noise(7, 4, 3, truncation=0.0))


def test_slerp_keeps_the_end_points_and_the_norm():
  a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  path = sampling.slerp(a, b, np.linspace(0, 1, 5))
  assert path.shape == (5, 2)
  np.testing.assert_allclose(path[0], a, atol=1e-12)
  np.testing.assert_allclose(path[-1], b, atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0)
  np.testing.assert_allclose(path[2], [np.sqrt(0.5), np.sqrt(0.5)])  # Half-way along the circle.
  # Gaussian end points: the great circle keeps the norm near theirs; a straight line would shrink it by ~30%.
  a, b = sampling.noise(2, 100, seed=0, truncation=0.0)
  norms = np.linalg.norm(sampling.slerp(a, b, np.linspace(0, 1, 9)), axis=1)
  assert norms.min() > 0.95 * min(norms[0], norms[-1])
  # (Nearly) parallel vectors: the straight line, no division by sin(0).
  same = sampling.slerp(a, a, np.linspace(0, 1, 3))
  assert np.isfinite(same).all()
  np.testing.assert_allclose(same, np.repeat(a[None].astype(np.float64), 3, axis=0), rtol=1e-6)


def test_to_uint8_rounds_and_clips():
  values = np.array([-3.0, -1.0, 10.4 / 127.5 - 1, 10.6 / 127.5 - 1, 0.0, 1.0, 2.0], np.float32)
  out = sampling.to_uint8(values)
  assert isinstance(out, tf.Tensor) and out.dtype == tf.uint8
  np.testing.assert_array_equal(out.numpy(), [0, 0, 10, 11, 128, 255, 255])
  np.testing.assert_array_equal(sampling.to_uint8(tf.constant(values, tf.float16)).numpy()[[0, 1, 5, 6]],
                                [0, 0, 255, 255])


def test_image_grid_layout_and_padding():
  images = np.stack([np.full((2, 3, 1), v, np.float32) for v in (-1.0, 0.0, 1.0, 1.0, -1.0)])
  grid = sampling.image_grid(images, rows=2)
  assert grid.shape == (4, 9, 1) and grid.dtype == np.uint8
  assert grid[0, 0, 0] == 0 and grid[0, 3, 0] == 128 and grid[0, 6, 0] == 255  # Row-major, [-1, 1] -> [0, 255].
  assert grid[2, 0, 0] == 255 and grid[2, 3, 0] == 0
  assert (grid[2:, 6:] == 0).all()  # The missing sixth image stays black.
  # Default: floor(sqrt(N)) rows; uint8 images are tiled as they are.
  codes = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 3, 1), np.uint8) + 1
  grid = sampling.image_grid(codes)
  assert grid.shape == (2 * 2, 3 * 3, 1)
  assert [grid[r * 2, c * 3, 0] for r in range(2) for c in range(3)] == [1, 2, 3, 4, 5, 0]


def test_grid_columns_and_tile():
  assert sampling.grid_columns(16) == 4
  assert sampling.grid_columns(10) == 4  # 3 rows of 4, as image_grid draws it.
  assert sampling.grid_columns(1) == 1
  assert sampling.grid_columns(12, num_classes=10) == 10  # One column per class.
  assert sampling.grid_columns(7, num_classes=10) == 4  # Fewer images than classes: near-square.
  images = np.arange(5 * 2 * 3 * 1, dtype=np.uint8).reshape(5, 2, 3, 1) + 1
  grid = sampling.tile(images, columns=2, scale=2)
  assert grid.shape == (3 * 2 * 2, 2 * 3 * 2, 1) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[4:8:2, 6::2], images[3])  # Row 1, column 1, every pixel doubled.
  np.testing.assert_array_equal(grid[4:8, 6:12], np.repeat(np.repeat(images[3], 2, axis=0), 2, axis=1))
  assert not grid[8:, 6:].any()  # The sixth cell is empty.
  np.testing.assert_array_equal(sampling.tile(images, columns=5), sampling.image_grid(images, rows=1))


@pytest.mark.parametrize("arch, num_classes", [("mlp", 0), ("cgan_mlp", 10)])
def test_generate_in_batches_equals_one_call(arch, num_classes):
  gan = models.build(helpers.config_values(arch=arch, latent_dim=8), num_classes)
  noise, labels = sampling.inputs(5, 8, num_classes, seed=2, truncation=0.0)
  fn = sampling.make_generate_fn(gan.generator, gan)
  images = sampling.generate(fn, noise, labels, batch_size=2)
  assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
  direct = np.asarray(gan.generate(tf.constant(noise), tf.constant(labels)), np.float32)
  np.testing.assert_allclose(images, direct, atol=1e-5)
  assert images.std() > 0.01 and np.abs(images).max() <= 1.0
