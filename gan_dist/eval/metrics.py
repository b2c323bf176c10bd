"""Sample-quality metrics on features and logits of a feature network (host-side NumPy, float64 statistics).

  real, fake: float [N, F] features (the penultimate layer of gan_dist's classifier, or Inception's pool3)
  logits: float [N, K]

- Frechet distance (FCD on the classifier's features, FID on Inception's): ||mu_r - mu_f||^2 + Tr(S_r + S_f
  - 2 (S_r S_f)^(1/2)) of the Gaussians fitted to both sets (Heusel et al. 2017).
- KID (Binkowski et al. 2018): the unbiased MMD^2 estimate with the kernel k(x, y) = (x.y / F + 1)^3, averaged over
  `num_subsets` random subsets of `subset_size` examples of each set; `kid_std` is the standard deviation of the
  subset estimates, i.e. the standard error of a KID measured on `subset_size` examples (the convention of the KID
  paper and of torch-fidelity, so figures compare).
- Classifier score (the Inception score's analogue, Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), the mean over
  `splits` equal parts (10 for the Inception score, as published figures use; 1 otherwise).
- Precision and recall of the k-NN manifolds (Kynkaanniemi et al. 2019, k = 3): precision is the fraction of fake
  samples inside some real sample's k-NN ball (the ball reaching its k-th nearest real neighbour); recall the
  fraction of real samples inside some fake sample's ball.
- Label accuracy (conditional models): the fraction of samples the classifier assigns the requested label, overall
  and per class.

Every function is deterministic (subsets from a fixed seed), so the same features give the same figures. A set with a
non-finite feature (a generator gone wrong: NaN or inf images) has no defined statistics: each of its figures is NaN
(`gan_dist.evaluate` prints null, the trainer keeps no best checkpoint of it); a sample without finite logits counts
as assigned no class.
"""

from typing import Dict, Optional, Tuple

import numpy as np

# Above this many features, and with more samples than features, the Frechet distance comes from the covariances
# (`frechet_distance`: cheap, ~1e-6 relative low on rank-deficient ones) instead of QR factors of the features
# (`frechet_distance_of_factors`: exact, but 10,000 x 2048 Inception features take ~10 s on 2 CPU cores, 10x np.cov).
EXACT_FRECHET_MAX_FEATURES = 512
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3
_BLOCK = 2048


def gaussian_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(mean float64 [F], covariance float64 [F, F]) of features [N, F]."""
  x = np.asarray(features, np.float64)
  return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))  # np.cov of one feature is a scalar.


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """Frechet distance between the Gaussians N(mu1, cov1) and N(mu2, cov2), for callers with statistics only.

  Tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), which is
  symmetric positive semi-definite, so no complex matrix square root (and no scipy) is needed. A rank-deficient
  covariance's null eigenvalues come out as round-off whose square roots (~1e-7 each) add up: 1e-6-1e-5 relative
  too low on ReLU features, which are often linear combinations of fewer directions (`frechet_distance_of_factors`
  is exact).
  """
  values, vectors = np.linalg.eigh(cov1)
  sqrt1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
  middle = sqrt1 @ cov2 @ sqrt1
  trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
  diff = mu1 - mu2
  return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt, 0.0))


def _finite(*arrays: np.ndarray) -> bool:
  """Whether every element of every array is finite (metrics of a set with NaN or inf features are NaN)."""
  return all(np.isfinite(a).all() for a in arrays)


def gaussian_factor(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(mean float64 [F], R float64 [min(N, F), F]) of features [N, F], with R^T R their covariance (ddof 1).

  R is the triangular factor of the QR decomposition of the centred features over sqrt(N - 1): O(N F^2), no square
  root of an eigenvalue.
  """
  x = np.asarray(features, np.float64)
  mean = x.mean(axis=0)
  return mean, np.linalg.qr((x - mean) / np.sqrt(max(len(x) - 1, 1)), mode="r")


def frechet_distance_of_factors(mu1: np.ndarray, r1: np.ndarray, mu2: np.ndarray, r2: np.ndarray) -> float:
  """Frechet distance between N(mu1, R1^T R1) and N(mu2, R2^T R2) (`gaussian_factor`s).

  The non-zero eigenvalues of S1 S2 = R1^T R1 R2^T R2 are those of (R1 R2^T)(R1 R2^T)^T, so Tr((S1 S2)^(1/2)) is the
  sum of the singular values of R1 R2^T, and Tr(S1) = ||R1||^2. A null direction of a covariance adds a singular
  value of round-off size (~1e-15), not the square root of one (~3e-8, as an eigendecomposition of S1 does).
  """
  trace_sqrt = np.linalg.svd(r1 @ r2.T, compute_uv=False).sum()
  diff = mu1 - mu2
  return float(max(diff @ diff + np.sum(r1 * r1) + np.sum(r2 * r2) - 2.0 * trace_sqrt, 0.0))


def frechet_distance_of_features(real: np.ndarray, fake: np.ndarray) -> float:
  """The Frechet distance of the Gaussians fitted to real [N, F] and fake [M, F], in O((N + M) F^2).

  `frechet_distance_of_factors` of their `gaussian_factor`s: Inception's 2048 features of a few hundred samples cost
  QR decompositions of [N, 2048] and an SVD of [N, M], not two eigendecompositions of [2048, 2048] (seconds each on
  a CPU); the same as the sum of the singular values of A^T B [N, M] (A, B the centred features [F, N], [F, M] over
  sqrt(N - 1), sqrt(M - 1)) up to float64 round-off.
  """
  return frechet_distance_of_factors(*gaussian_factor(real), *gaussian_factor(fake))


def fcd(real: np.ndarray, fake: np.ndarray, cache: Optional[dict] = None) -> float:
  """Frechet distance between the feature sets real [N, F] and fake [M, F] (FCD; FID on Inception's features).

  Exact (`frechet_distance_of_factors`) unless min(N, M) > F > EXACT_FRECHET_MAX_FEATURES, where it comes from the
  covariances (`frechet_distance`).

  Args:
    cache: a dict kept with `real` (a `Reference`'s): the real side's factor or statistics are computed once.

  Returns:
    The distance; NaN if a feature is not finite (the solvers would raise).
  """
  if not _finite(real, fake):
    return float("nan")
  cache = {} if cache is None else cache
  if min(len(real), len(fake)) > np.shape(real)[1] > EXACT_FRECHET_MAX_FEATURES:
    if "stats" not in cache:
      cache["stats"] = gaussian_stats(real)
    return frechet_distance(*cache["stats"], *gaussian_stats(fake))
  if "factor" not in cache:
    cache["factor"] = gaussian_factor(real)
  return frechet_distance_of_factors(*cache["factor"], *gaussian_factor(fake))


def _polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 of two equal-size float64 sets [m, F] with the cubic polynomial kernel."""
  m, dim = x.shape

  def kernel_sum(a, b, same):
    # float64 elements: the MMD is a small difference of large kernel sums, and float32 elements (rel 6e-8 each) were
    # 10-50% off for features 1,000 from the origin, and overflowed to NaN for features above ~3e6. As fast as the
    # float32 kernel with its float64 sums (100 subsets of 1,000 x 128 features: ~3 s either way on 2 CPU cores).
    k = a @ b.T / dim + 1.0
    k = k * k * k
    total = k.sum()
    return total - np.trace(k) if same else total

  return float((kernel_sum(x, x, True) + kernel_sum(y, y, True)) / (m * (m - 1))
               - 2.0 * kernel_sum(x, y, False) / (m * m))


def kid(real: np.ndarray, fake: np.ndarray, num_subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> Tuple[float, float]:
  """(KID, its standard deviation over subsets) of real [N, F] and fake [M, F]; subsets of min(size, N, M).

  With N = M <= `subset_size` every subset is both whole sets: the KID of the sets, and a deviation of 0. (NaN,
  NaN) if a feature is not finite.
  """
  real = np.asarray(real, np.float64)
  fake = np.asarray(fake, np.float64)
  m = min(subset_size, len(real), len(fake))
  if m < 2:
    raise ValueError(f"KID needs at least 2 examples of each set, got {len(real)} real and {len(fake)} fake")
  if not _finite(real, fake):
    return float("nan"), float("nan")
  if m == len(real) == len(fake):
    # Every subset would hold both whole sets (only their order drawn): one value, no spread to estimate.
    return float(_polynomial_mmd(real, fake)), 0.0
  rng = np.random.RandomState(seed)
  values = [_polynomial_mmd(real[rng.choice(len(real), m, replace=False)],
                            fake[rng.choice(len(fake), m, replace=False)]) for _ in range(num_subsets)]
  return float(np.mean(values)), float(np.std(values))


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def classifier_score(logits: np.ndarray, splits: int = 1) -> float:
  """exp(E KL(p(y|x) || p(y))) from logits [N, K], averaged over `splits` consecutive parts (Inception score).

  Part i holds rows [i N // splits, (i + 1) N // splits), as in the Inception score's reference implementation
  (openai/improved-gan), so scores of N not divisible by `splits` compare; with N < `splits`, N parts of one row.
  NaN if a logit is NaN.
  """
  p = _softmax(logits)
  parts = max(1, min(splits, len(p)))
  scores = []
  for i in range(parts):
    part = p[i * len(p) // parts:(i + 1) * len(p) // parts]
    marginal = part.mean(axis=0, keepdims=True)
    kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """[len(a), len(b)] squared Euclidean distances of a [n, F] and b [m, F] (clipped at 0), in the inputs' precision
  (float32 features: one fast float32 matrix product).

  |a|^2 + |b|^2 - 2 a.b loses the distance between points far from the origin relative to their spread (an error of
  ~6e-8 |a|^2 in float32): both sets are first moved by b's mean (in float64), which leaves every distance as it is.
  """
  dtype = np.result_type(a, b, np.float32)
  centre = np.mean(b, axis=0, dtype=np.float64)
  a = (np.asarray(a, np.float64) - centre).astype(dtype)
  b = (np.asarray(b, np.float64) - centre).astype(dtype)
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
  return np.maximum(d, 0.0)


def memorization(queries: np.ndarray, train: np.ndarray, held_out: np.ndarray, leave_one_out: bool = False) -> float:
  """Share of `queries` [N, F] whose nearest `train` [T, F] point is nearer than their nearest `held_out` [M, F]
  point. Samples of a model that does not copy its training set score what real held-out images score (about
  T / (T + M)); copies score near 1.

  Args:
    leave_one_out: the queries are `held_out` itself: each one's own row is left out of its held-out neighbours.

  Returns:
    The share; NaN if a feature is not finite.
  """
  if not _finite(queries, train, held_out):
    return float("nan")
  to_train = _squared_distances(queries, train).min(axis=1)
  to_held_out = _squared_distances(queries, held_out)
  if leave_one_out:
    np.fill_diagonal(to_held_out, np.inf)
  return float(np.mean(to_train < to_held_out.min(axis=1)))


def knn_radii(features: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
  """float32 [N]: squared distance of every point to its k-th nearest other point of the same set."""
  x = np.asarray(features, np.float32)
  radii = np.empty(len(x), np.float32)
  for start in range(0, len(x), _BLOCK):
    d = _squared_distances(x[start:start + _BLOCK], x)
    # The point itself is at distance 0 and comes first: the k-th neighbour is at index k.
    radii[start:start + _BLOCK] = np.partition(d, k, axis=1)[:, k]
  return radii


def _coverage(queries: np.ndarray, points: np.ndarray, radii: np.ndarray) -> float:
  """Fraction of queries within the ball of at least one point (ball i: squared radius radii[i])."""
  inside = np.zeros(len(queries), bool)
  for start in range(0, len(queries), _BLOCK):
    d = _squared_distances(queries[start:start + _BLOCK], points)
    inside[start:start + _BLOCK] = (d <= radii[None, :]).any(axis=1)
  return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_NEIGHBOURS,
                     real_radii: Optional[np.ndarray] = None) -> Tuple[float, float]:
  """(precision, recall) of fake [M, F] against real [N, F]; `real_radii` (from `knn_radii(real)`) may be cached.
  (NaN, NaN) if a feature is not finite (a NaN sample is in no ball and its ball holds nothing: no meaning)."""
  real = np.asarray(real, np.float32)
  fake = np.asarray(fake, np.float32)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} examples of each set, got {len(real)} real "
                     f"and {len(fake)} fake")
  if not _finite(real, fake):
    return float("nan"), float("nan")
  if real_radii is None:
    real_radii = knn_radii(real, k)
  return _coverage(fake, real, real_radii), _coverage(real, fake, knn_radii(fake, k))


def label_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> Tuple[float, np.ndarray]:
  """(overall accuracy, float [num_classes] per-class accuracy; NaN for a class without samples). Examples without
  a class (label -1: images at the root of a class folder tree) count in neither; NaN overall if none has one. A
  sample whose logits are not all finite was assigned no class: it counts as wrong (argmax would pick a NaN's
  position)."""
  labels = np.asarray(labels)
  known = labels >= 0
  correct = (np.argmax(logits, axis=1) == labels) & np.isfinite(logits).all(axis=1)
  per_class = np.array([correct[labels == k].mean() if np.any(labels == k) else np.nan for k in range(num_classes)])
  return (float(correct[known].mean()) if np.any(known) else float("nan")), per_class


class Reference:
  """The real-data side of the metrics for one feature network: features, Gaussian statistics, k-NN radii.

  Args:
    features: float [N, F] features of real images.
    full: also prepare KID and precision/recall (the classifier's 128 features); False keeps only what FID needs
      (Inception's 2048 features, where KID and k-NN on a CPU would cost minutes per evaluation).
  """

  def __init__(self, features: np.ndarray, full: bool = True):
    self.features = np.asarray(features, np.float32)
    self.full = full
    self._fcd_cache = {}  # Their Gaussian (`fcd`), computed at the first comparison.
    self.radii = knn_radii(self.features) if full else None

  def compare(self, features: np.ndarray, logits: np.ndarray) -> Dict[str, float]:
    """Metrics of a sample's features [M, F] and logits [M, K] against this reference.

    Returns:
      full: fcd, kid, kid_std, classifier_score, precision, recall. Otherwise (Inception): fid, inception_score
      (10 splits, as published).
    """
    distance = fcd(self.features, features, cache=self._fcd_cache)
    if not self.full:
      return {"fid": distance, "inception_score": classifier_score(logits, splits=10)}
    kid_mean, kid_std = kid(self.features, features)
    precision, recall = precision_recall(self.features, features, real_radii=self.radii)
    return {"fcd": distance, "kid": kid_mean, "kid_std": kid_std, "classifier_score": classifier_score(logits),
            "precision": precision, "recall": recall}
