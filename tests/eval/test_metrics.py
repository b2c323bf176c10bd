"""The metric formulas on hand-checkable inputs, and their ranges on arbitrary ones (no network involved)."""

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


def test_frechet_distance_from_features_equals_the_covariance_formula():
  # Fewer samples than features (Inception's 2048 features of a few hundred images: the case it is for), more, and
  # unequal sets; each a different distribution so the trace term is not trivially that of identical sets.
  rng = np.random.RandomState(2)
  for n, m, dim in ((12, 20, 64), (40, 7, 32), (300, 200, 16)):
    real = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3
    fake = rng.standard_normal((m, dim)) * rng.uniform(0.5, 2.0, dim) + 0.2
    expected = metrics.frechet_distance(*metrics.gaussian_stats(real), *metrics.gaussian_stats(fake))
    assert expected > 1.0
    # rel 1e-6: the covariance formula takes square roots of the round-off eigenvalues (~1e-14) of a rank-deficient
    # matrix, ~1e-7 each; a wrong trace term is off by O(1).
    assert metrics.frechet_distance_of_features(real, fake) == pytest.approx(expected, rel=1e-6)
    assert metrics.fcd(real, fake) == pytest.approx(expected, rel=1e-6)
  assert metrics.frechet_distance_of_features(real, real) == pytest.approx(0.0, abs=1e-9)


def test_fcd_kid_precision_recall_of_a_set_against_itself_and_against_a_shifted_set():
  rng = np.random.RandomState(0)
  real = rng.standard_normal((600, 8)).astype(np.float32)
  other = rng.standard_normal((600, 8)).astype(np.float32)  # Same distribution, other samples.
  far = other + 5.0
  assert metrics.fcd(real, real) == pytest.approx(0.0, abs=1e-6)
  assert metrics.fcd(real, other) < 0.2 < 50 < metrics.fcd(real, far)
  same, same_std = metrics.kid(real, other, num_subsets=20, subset_size=200)
  shifted, _ = metrics.kid(real, far, num_subsets=20, subset_size=200)
  assert same_std > 0.0 and abs(same) < 3 * same_std + 1e-3 and shifted > 100 * (abs(same) + same_std)
  assert metrics.precision_recall(real, real) == (1.0, 1.0)
  precision, recall = metrics.precision_recall(real, other)
  assert 0.8 < precision <= 1.0 and 0.8 < recall <= 1.0
  assert metrics.precision_recall(real, far) == (0.0, 0.0)


def test_kid_and_kid_std_are_the_mean_and_std_of_the_unbiased_mmd_of_the_seeded_subsets():
  # The same subsets as kid's (RandomState(seed), per subset a real then a fake draw without replacement), each
  # one's unbiased MMD^2 computed here in float64 from the kernel's definition.
  rng = np.random.RandomState(3)
  real = rng.standard_normal((60, 4)).astype(np.float32)
  fake = (rng.standard_normal((50, 4)) * 1.3 + 0.2).astype(np.float32)
  subsets, size = 12, 20
  kernel = lambda a, b: (a @ b.T / 4 + 1.0) ** 3  # (x.y / F + 1)^3
  off_diagonal = ~np.eye(size, dtype=bool)
  draw = np.random.RandomState(7)
  mmds = []
  for _ in range(subsets):
    x = real[draw.choice(len(real), size, replace=False)].astype(np.float64)
    y = fake[draw.choice(len(fake), size, replace=False)].astype(np.float64)
    mmds.append(kernel(x, x)[off_diagonal].mean() + kernel(y, y)[off_diagonal].mean() - 2.0 * kernel(x, y).mean())
  # The subset estimates spread (std 0.43 of their mean here), so a std that is not theirs (scaled, with ddof=1:
  # x1.04, or of other subsets: seed 0's is 7% off) misses rel 1e-4; kid's float32 kernel elements cost 3e-8.
  assert np.std(mmds) > 0.3 * abs(np.mean(mmds))
  mean, std = metrics.kid(real, fake, num_subsets=subsets, subset_size=size, seed=7)
  assert mean == pytest.approx(np.mean(mmds), rel=1e-4)
  assert std == pytest.approx(np.std(mmds), rel=1e-4)  # ddof=0: torch-fidelity's kid_std.


def test_kid_of_sets_no_larger_than_a_subset_is_their_mmd_with_a_deviation_of_exactly_0():
  """evaluate --num=500 (subsets of 1,000): every subset would be both whole sets, reordered; the deviation is 0,
  not the round-off of 100 reorderings (~1e-15), and KID is the sets' own unbiased MMD^2. Sets of unequal sizes
  still draw subsets of the smaller one."""
  rng = np.random.RandomState(4)
  real = rng.standard_normal((30, 4)).astype(np.float32)
  fake = (rng.standard_normal((30, 4)) + 0.5).astype(np.float32)
  x, y = real.astype(np.float64), fake.astype(np.float64)
  kernel = lambda a, b: (a @ b.T / 4 + 1.0) ** 3
  off_diagonal = ~np.eye(30, dtype=bool)
  mmd = kernel(x, x)[off_diagonal].mean() + kernel(y, y)[off_diagonal].mean() - 2.0 * kernel(x, y).mean()
  mean, std = metrics.kid(real, fake, subset_size=1000)
  assert std == 0.0 and mean == pytest.approx(mmd, rel=1e-4)
  _, unequal_std = metrics.kid(real, np.concatenate([fake, fake[:10] + 1.0]), subset_size=1000)
  assert unequal_std > 0.0


def test_precision_and_recall_count_points_inside_the_other_sets_nearest_neighbour_balls_boundary_included():
  # k=1: each ball reaches the nearest other point of its set. Integer coordinates: float32 distances are exact.
  real = np.array([[0.0], [10.0], [20.0], [30.0], [40.0]], np.float32)
  fake = np.array([[-11.0], [-10.0], [0.0], [21.0], [30.0]], np.float32)
  np.testing.assert_allclose(metrics.knn_radii(real, k=1), [100] * 5)  # The real balls cover [-10, 50].
  np.testing.assert_allclose(metrics.knn_radii(fake, k=1), [1, 1, 100, 81, 81])
  precision, recall = metrics.precision_recall(real, fake, k=1)
  # Precision: -10 (on the boundary of 0's ball), 0, 21 and 30 are inside a real ball; -11 is 11 from 0 (121 > 100).
  assert precision == pytest.approx(4 / 5)
  # Recall: the fake balls are -11: [-12, -10], -10: [-11, -9], 0: [-10, 10], 21: [12, 30], 30: [21, 39]; 0, 10
  # (on the boundary of 0's ball), 20 and 30 are inside one, 40 is 10 from 30 (100 > 81).
  assert recall == pytest.approx(4 / 5)
  # Balls 1.5x too wide (squared) would take in -11 and 40: (1.0, 1.0); open balls would leave out -10 and 10:
  # (0.6, 0.6); either set's radii at the default k=3 would cover everything: 1.0.


def test_every_metric_stays_in_its_range_on_arbitrary_inputs():
  rng = np.random.RandomState(1)
  for trial in range(5):
    n, m, dim, k = rng.randint(8, 120), rng.randint(8, 120), rng.randint(1, 12), rng.randint(2, 7)
    real = rng.standard_normal((n, dim)).astype(np.float32) * rng.uniform(0.1, 3)
    fake = rng.standard_normal((m, dim)).astype(np.float32) * rng.uniform(0.1, 3) + rng.uniform(-2, 2)
    logits = rng.standard_normal((m, k)) * rng.uniform(0, 20)
    assert metrics.fcd(real, fake) >= 0.0, trial
    kid_mean, kid_std = metrics.kid(real, fake, num_subsets=10, subset_size=50)
    assert np.isfinite(kid_mean) and kid_std >= 0.0, trial
    precision, recall = metrics.precision_recall(real, fake)
    assert 0.0 <= precision <= 1.0 and 0.0 <= recall <= 1.0, trial
    for splits in (1, 3):
      assert 1.0 - 1e-9 <= metrics.classifier_score(logits, splits=splits) <= k + 1e-9, trial
    overall, per_class = metrics.label_accuracy(logits, rng.randint(0, k, m), k)
    assert 0.0 <= overall <= 1.0 and np.all((per_class[~np.isnan(per_class)] >= 0) & (per_class <= 1)), trial


def test_knn_radii_are_kth_neighbour_distances():
  points = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
  # k=1: squared distance to the nearest other point; k=2: to the second nearest.
  np.testing.assert_allclose(metrics.knn_radii(points, k=1), [1, 1, 4, 16])
  np.testing.assert_allclose(metrics.knn_radii(points, k=2), [9, 4, 9, 36])


def test_too_few_examples_are_refused():
  with pytest.raises(ValueError, match="KID needs at least 2"):
    metrics.kid(np.zeros((1, 3)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="needs more than 3 examples"):
    metrics.precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))


def test_classifier_score_and_label_accuracy():
  confident = np.eye(4)[np.arange(400) % 4] * 50.0  # Sure of a class, classes balanced: score = K.
  assert metrics.classifier_score(confident) == pytest.approx(4.0, rel=1e-6)
  assert metrics.classifier_score(np.tile(confident[:1], (400, 1))) == pytest.approx(1.0)  # One class only.
  assert metrics.classifier_score(np.zeros((10, 4))) == pytest.approx(1.0)  # Undecided: no information.
  # 4 splits of the set sorted by class: each split sees one class, so it scores 1 although the whole set scores 4.
  assert metrics.classifier_score(confident[np.argsort(np.arange(400) % 4, kind="stable")], splits=4) == \
      pytest.approx(1.0)
  logits = np.eye(3)[[0, 1, 2, 1, 1, 0]]
  overall, per_class = metrics.label_accuracy(logits, np.array([0, 1, 2, 0, 1, 2]), 4)
  assert overall == pytest.approx(4 / 6)
  np.testing.assert_allclose(per_class[:3], [0.5, 1.0, 0.5])
  assert np.isnan(per_class[3])
  # Images without a class (label -1, root images of a class folder tree) are in neither count: 4 of 6 as before.
  overall, per_class = metrics.label_accuracy(np.eye(3)[[0, 1, 2, 1, 1, 0, 0, 2]],
                                              np.array([0, 1, 2, 0, 1, 2, -1, -1]), 4)
  assert overall == pytest.approx(4 / 6)
  np.testing.assert_allclose(per_class[:3], [0.5, 1.0, 0.5])
  assert np.isnan(metrics.label_accuracy(np.eye(3)[[0, 1]], np.array([-1, -1]), 3)[0])


def test_reference_compares_like_the_functions_and_keeps_only_fid_and_is_when_not_full():
  rng = np.random.RandomState(2)
  real = rng.standard_normal((200, 6)).astype(np.float32)
  fake = rng.standard_normal((150, 6)).astype(np.float32) + 0.5
  logits = rng.standard_normal((150, 5)) * 3
  found = metrics.Reference(real).compare(fake, logits)
  assert found["fcd"] == pytest.approx(metrics.fcd(real, fake), rel=1e-9)
  assert (found["kid"], found["kid_std"]) == pytest.approx(metrics.kid(real, fake), rel=1e-9)
  assert (found["precision"], found["recall"]) == metrics.precision_recall(real, fake)
  assert found["classifier_score"] == pytest.approx(metrics.classifier_score(logits))
  partial = metrics.Reference(real, full=False).compare(fake, logits)
  assert set(partial) == {"fid", "inception_score"} and partial["fid"] == pytest.approx(found["fcd"])
  assert partial["inception_score"] == pytest.approx(metrics.classifier_score(logits, splits=10))


def test_memorization_counts_samples_nearer_to_training_images_than_to_held_out_ones():
  rng = np.random.RandomState(0)
  train, held_out = rng.randn(200, 8), rng.randn(200, 8)
  copies = train[:100] + 1e-3 * rng.randn(100, 8)
  assert metrics.memorization(copies, train, held_out) == 1.0
  assert metrics.memorization(held_out[:50] + 1e-3, train, held_out) == 0.0
  fresh = rng.randn(2000, 8)  # Samples of the distribution, not of the sets: about T / (T + M).
  assert 0.45 < metrics.memorization(fresh, train, held_out) < 0.55
  # Held-out images themselves, each without its own row: about T / (T + M - 1), not 0.
  assert 0.4 < metrics.memorization(held_out, train, held_out, leave_one_out=True) < 0.6


def _exact_mmd(x, y):
  """The unbiased MMD^2 of the cubic polynomial kernel, in float64 from its definition."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  kernel = lambda a, b: (a @ b.T / x.shape[1] + 1.0) ** 3
  off_diagonal = ~np.eye(len(x), dtype=bool)
  return kernel(x, x)[off_diagonal].mean() + kernel(y, y)[off_diagonal].mean() - 2.0 * kernel(x, y).mean()


def _exact_precision_recall(real, fake, k=3):
  """k-NN precision and recall from float64 pairwise differences (no |a|^2 + |b|^2 - 2ab cancellation)."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  squared = lambda a, b: ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
  real_radii = np.sort(squared(real, real), axis=1)[:, k]  # Index 0: the point itself.
  fake_radii = np.sort(squared(fake, fake), axis=1)[:, k]
  between = squared(fake, real)
  return (between <= real_radii[None, :]).any(1).mean(), (between.T <= fake_radii[None, :]).any(1).mean()


def test_kid_is_its_definition_on_features_far_from_the_origin():
  """The cubic kernel of features with a common offset of 1,000 is ~1e18 and the MMD a difference of such sums:
  float32 kernel elements (rel 6e-8 each) made KID 10% off here, and features of 1e20 overflowed float32 to NaN."""
  rng = np.random.RandomState(5)
  real = (rng.standard_normal((40, 8)) + 1e3).astype(np.float32)
  fake = (rng.standard_normal((40, 8)) * 1.2 + 1e3).astype(np.float32)
  mean, std = metrics.kid(real, fake)
  assert std == 0.0 and mean == pytest.approx(_exact_mmd(real, fake), rel=1e-6)
  huge = (rng.standard_normal((40, 8)) * 1e20).astype(np.float32)
  mean, _ = metrics.kid(huge, huge[::-1] * 2)
  assert np.isfinite(mean) and mean == pytest.approx(_exact_mmd(huge, huge[::-1] * 2), rel=1e-6)


def test_precision_and_recall_are_their_definition_on_features_far_from_the_origin():
  """Squared distances as |a|^2 + |b|^2 - 2ab in float32 lose the distances between points 1,000 from the origin
  (error ~6e-8 x 1e6 x dim against distances ~dim): precision came out 0.71 instead of 0.62 here."""
  rng = np.random.RandomState(6)
  real = (rng.standard_normal((300, 16)) + 1e3).astype(np.float32)
  fake = (rng.standard_normal((300, 16)) * 1.1 + 1e3).astype(np.float32)
  expected = _exact_precision_recall(real, fake)
  assert metrics.precision_recall(real, fake) == pytest.approx(expected, abs=1 / 300)
  # Radii of a set whose points lie far from the origin are those of the same set moved to it.
  np.testing.assert_allclose(metrics.knn_radii(real), metrics.knn_radii(real - 1e3), rtol=1e-3)


def test_non_finite_features_give_nan_metrics_not_a_crash():
  """A generator gone wrong (NaN or inf images) gives NaN features: each figure of that set is NaN, which the
  trainer skips for the best checkpoint and `gan_dist.evaluate` prints as null (eigh raised LinAlgError, stopping
  the run with a traceback)."""
  rng = np.random.RandomState(7)
  real = rng.standard_normal((50, 8)).astype(np.float32)
  for bad_value in (np.nan, np.inf):
    fake = rng.standard_normal((40, 8)).astype(np.float32)
    fake[3] = bad_value
    logits = rng.standard_normal((40, 5))
    logits[3] = np.nan
    found = metrics.Reference(real).compare(fake, logits)
    for name in ("fcd", "kid", "kid_std", "precision", "recall", "classifier_score"):
      assert np.isnan(found[name]), (bad_value, name)
    partial = metrics.Reference(real, full=False).compare(fake, logits)
    assert np.isnan(partial["fid"]) and np.isnan(partial["inception_score"]), bad_value
    assert np.isnan(metrics.fcd(real[:6], fake)), bad_value  # The [N, M] path (fewer samples than features).
    assert np.isnan(metrics.memorization(fake, real, real)), bad_value
  # A sample without finite logits was assigned no class: it counts as wrong, whatever argmax makes of NaN.
  logits = np.eye(3)[[0, 1, 2, 0]] * 5
  logits[0] = np.nan
  overall, per_class = metrics.label_accuracy(logits, np.array([0, 1, 2, 0]), 3)
  assert overall == pytest.approx(3 / 4)  # Argmax takes a NaN row as its first class: 4 / 4.
  np.testing.assert_allclose(per_class, [0.5, 1.0, 1.0])


def test_inception_score_splits_are_the_reference_implementations_parts():
  """openai/improved-gan's split i is rows [i N // splits, (i + 1) N // splits): for N = 15 and 10 splits parts of
  1, 2, 1, 2, ... rows (np.array_split made 2, 2, 2, 2, 2, 1, 1, ...: another score)."""
  rng = np.random.RandomState(8)
  logits = rng.standard_normal((15, 6)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for i in range(10):
    part = p[i * 15 // 10:(i + 1) * 15 // 10]
    scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), 1))))
  assert metrics.classifier_score(logits, splits=10) == pytest.approx(np.mean(scores), rel=1e-9)
  # Fewer samples than splits: one part per sample, each scoring 1 (no empty part, whose score would be NaN).
  assert metrics.classifier_score(logits[:7], splits=10) == pytest.approx(1.0)


def test_fcd_of_linearly_dependent_features_is_exact():
  """Features that are linear combinations of fewer directions (ReLU features often are) have a rank-deficient
  covariance whose null eigenvalues come out as round-off (~1e-15 of the largest); their square roots (~3e-8 each)
  added up: FCD was 1.6e-6 too low here, 1.2e-5 on 10,000 MNIST features of the classifier (0.468843 for 0.468848,
  which scipy's sqrtm and the [N, M] formula agree on). The exact value: the [N, M] formula of
  `frechet_distance_of_features`' docstring, in float64."""
  rng = np.random.RandomState(9)
  mixing = rng.standard_normal((16, 64))
  real = (np.maximum(rng.standard_normal((1000, 16)), 0) @ mixing).astype(np.float32)
  fake = (np.maximum(rng.standard_normal((1000, 16)) + 0.1, 0) @ mixing).astype(np.float32)
  x, y = real.astype(np.float64), fake.astype(np.float64)
  a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
  b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
  diff = x.mean(0) - y.mean(0)
  exact = diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * np.linalg.svd(a @ b.T, compute_uv=False).sum()
  assert metrics.fcd(real, fake) == pytest.approx(exact, rel=1e-10)
  assert metrics.Reference(real).compare(fake, np.zeros((1000, 2)))["fcd"] == pytest.approx(exact, rel=1e-10)
