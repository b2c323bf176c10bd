"""The metric formulas on hand-checkable inputs (no network involved)."""

import numpy as np
import pytest

from gan_dist.eval import metrics


def test_frechet_distance_of_known_gaussians():
  # 1-D: N(0, 1) vs N(1, 4): (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2.
  assert metrics.frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)) == pytest.approx(2.0)
  cov = np.array([[2.0, 0.5], [0.5, 1.0]])
  assert metrics.frechet_distance(np.ones(2), cov, np.ones(2), cov) == pytest.approx(0.0, abs=1e-9)
  # Diagonal covariances: the distance is the sum over dimensions of the 1-D distances.
  d = metrics.frechet_distance(np.zeros(2), np.diag([1.0, 9.0]), np.array([3.0, 0.0]), np.diag([4.0, 1.0]))
  assert d == pytest.approx((9 + 1 + 4 - 4) + (0 + 9 + 1 - 6))


def test_fcd_kid_precision_recall_of_a_set_against_itself_and_against_a_shifted_set():
  rng = np.random.RandomState(0)
  real = rng.standard_normal((600, 8)).astype(np.float32)
  other = rng.standard_normal((600, 8)).astype(np.float32)  # Same distribution, other samples.
  far = other + 5.0
  assert metrics.fcd(real, real) == pytest.approx(0.0, abs=1e-6)
  assert metrics.fcd(real, other) < 0.2 < 50 < metrics.fcd(real, far)
  same, same_std = metrics.kid(real, other, num_subsets=20, subset_size=200)
  shifted, _ = metrics.kid(real, far, num_subsets=20, subset_size=200)
  assert abs(same) < 3 * same_std + 1e-3 and shifted > 100 * (abs(same) + same_std)
  assert metrics.precision_recall(real, real) == (1.0, 1.0)
  precision, recall = metrics.precision_recall(real, other)
  assert 0.8 < precision <= 1.0 and 0.8 < recall <= 1.0
  assert metrics.precision_recall(real, far) == (0.0, 0.0)


def test_knn_radii_are_kth_neighbour_distances():
  points = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
  # k=1: squared distance to the nearest other point; k=2: to the second nearest.
  np.testing.assert_allclose(metrics.knn_radii(points, k=1), [1, 1, 4, 16])
  np.testing.assert_allclose(metrics.knn_radii(points, k=2), [9, 4, 9, 36])


def test_classifier_score_and_label_accuracy():
  confident = np.eye(4)[np.arange(400) % 4] * 50.0  # Sure of a class, classes balanced: score = K.
  assert metrics.classifier_score(confident) == pytest.approx(4.0, rel=1e-6)
  assert metrics.classifier_score(np.tile(confident[:1], (400, 1))) == pytest.approx(1.0)  # One class only.
  assert metrics.classifier_score(np.zeros((10, 4))) == pytest.approx(1.0)  # Undecided: no information.
  logits = np.eye(3)[[0, 1, 2, 1, 1, 0]]
  overall, per_class = metrics.label_accuracy(logits, np.array([0, 1, 2, 0, 1, 2]), 4)
  assert overall == pytest.approx(4 / 6)
  np.testing.assert_allclose(per_class[:3], [0.5, 1.0, 0.5])
  assert np.isnan(per_class[3])
