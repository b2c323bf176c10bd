"""Differentiable augmentation (augment.py) and ADA inside the train step: each transform's shape, range,
gradient, identity at p = 0 and seeding; exact resampling, aniso and cutout at fixed parameters; the spread of the
drawn scalings and cutout centres; topology independence; ADA's p on 1 device, 2 replicas and 2 workers, restored
on resume; refusals."""

import dataclasses
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import augment
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import losses
from gan_dist import main
from gan_dist import state as state_lib
from gan_dist import train_step as train_step_lib
from gan_dist import checkpoint as checkpoint_lib
from tests import helpers
from tests import subprocs

B, H = 8, 16
GEOMETRIC = ("translation", "cutout", "flip", "rot90", "int_translation", "scale", "aniso")


def _images(channels=3, seed=0):
  return tf.random.stateless_uniform([B, H, H, channels], seed=[seed, 1], minval=-1.0, maxval=1.0)


def _apply(images, names, seed=(3, 4), p=1.0, rows=None):
  rows = rows or (lambda v: v)
  return augment.apply(images, names, tf.constant(seed, tf.int64), p, B, rows)


def test_every_transform_name_of_the_config_has_a_function():
  assert tuple(augment.TRANSFORMS) == config_lib.AUGMENT_TRANSFORMS
  assert all(set(config_lib.augment_policy(config_lib.make_config(augment=mode))) <= set(augment.TRANSFORMS)
             for mode in ("diffaug", "ada"))


@pytest.mark.parametrize("name", config_lib.AUGMENT_TRANSFORMS)
def test_transform_shape_range_gradient_identity_and_seeding(name):
  x = _images()
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = _apply(x, [name])
    loss = tf.reduce_sum(y * tf.random.stateless_normal(y.shape, seed=[5, 6]))
  grad = tape.gradient(loss, x)
  assert y.shape == x.shape and y.dtype == tf.float32
  assert np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0
  # Every example changed (p = 1), except where a drawn parameter happens to be the identity (a zero shift, a
  # quarter turn of 0, tails of the flip).
  changed = np.abs((y - x).numpy()).reshape(B, -1).max(axis=1) > 1e-6
  assert changed.sum() >= (2 if name in ("flip", "rot90", "translation", "int_translation") else B), changed
  if name in GEOMETRIC:  # Pixels move (or become the zero padding): no new values outside the input's range.
    assert y.numpy().min() >= min(x.numpy().min(), 0.0) - 1e-5 and y.numpy().max() <= x.numpy().max() + 1e-5
  else:
    assert np.abs(y.numpy()).max() <= 3.0
  # p = 0: bitwise the input; the same seed: the same output; another seed: another one.
  np.testing.assert_array_equal(_apply(x, [name], p=0.0).numpy(), x.numpy())
  np.testing.assert_array_equal(_apply(x, [name]).numpy(), y.numpy())
  assert not np.array_equal(_apply(x, [name], seed=(3, 5)).numpy(), y.numpy())


@pytest.mark.slow
def test_the_whole_ada_policy_and_its_gradient_compile_with_xla():
  """--jit_compile puts D's augmentation inside the XLA-compiled per-replica step, G's gradient through it too:
  ADA's whole policy, composed as the step composes it (consecutive geometric maps as one resampling), compiles
  with its gradient. (tests/test_jit_compile.py trains under XLA with ADA on 2 replicas with a shorter policy: each
  replica compiles its own step, and there the whole policy took most of the time.)"""
  policy = config_lib.augment_policy(config_lib.make_config(augment="ada"))
  assert {"flip", "rot90", "scale", "hue"} <= set(policy)

  @tf.function(jit_compile=True, autograph=False)
  def augment_and_grad(x, seed, p):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = augment.apply(x, policy, seed, p, B, lambda v: v)
      loss = tf.reduce_sum(y * y)
    return y, tape.gradient(loss, x)

  x = _images()
  y, grad = augment_and_grad(x, tf.constant([3, 4], tf.int64), tf.constant(1.0))
  assert y.shape == x.shape and grad.shape == x.shape
  assert np.isfinite(y.numpy()).all() and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0
  assert not np.allclose(y.numpy(), x.numpy())  # It augmented (p = 1).


def test_colour_transforms_keep_what_they_should():
  x = _images()
  shift = (_apply(x, ["brightness"]) - x).numpy()  # One constant per image, within +-0.5.
  assert np.allclose(shift, shift[:, :1, :1, :1], atol=1e-6) and np.abs(shift).max() <= 0.5
  grey = lambda v: tf.reduce_mean(v, axis=3).numpy()
  np.testing.assert_allclose(grey(_apply(x, ["saturation"])), grey(x), atol=1e-5)  # Grey levels stay.
  mean = lambda v: tf.reduce_mean(v, axis=[1, 2, 3]).numpy()
  np.testing.assert_allclose(mean(_apply(x, ["contrast"])), mean(x), atol=1e-5)  # The image mean stays.
  hue = _apply(x, ["hue"])  # A rotation about the grey axis: each pixel keeps its norm and its grey level.
  np.testing.assert_allclose(tf.norm(hue, axis=3).numpy(), tf.norm(x, axis=3).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grey(hue), grey(x), atol=1e-5)
  gray = _images(channels=1)  # Saturation and hue are no-ops on one channel.
  for name in ("saturation", "hue"):
    np.testing.assert_array_equal(_apply(gray, [name]).numpy(), gray.numpy())


def test_resampling_moves_pixels_exactly():
  x = _images(channels=2)
  ones, zeros = tf.ones([B]), tf.zeros([B])
  shift_y, shift_x = tf.fill([B], 2.0), tf.fill([B], -3.0)
  out = augment._resample(x, ones, ones, shift_y, shift_x, reflect=False).numpy()  # pylint: disable=protected-access
  want = np.zeros_like(x.numpy())
  want[:, 2:, :H - 3] = x.numpy()[:, :H - 2, 3:]
  np.testing.assert_array_equal(out, want)
  out = augment._resample(x, ones, ones, shift_y, shift_x, reflect=True).numpy()  # pylint: disable=protected-access
  padded = np.pad(x.numpy(), [(0, 0), (2, 0), (0, 3), (0, 0)], mode="reflect")
  np.testing.assert_array_equal(out, padded[:, :H, 3:])
  same = augment._resample(x, ones, ones, zeros, zeros, reflect=True).numpy()  # pylint: disable=protected-access
  np.testing.assert_array_equal(same, x.numpy())
  # Scaling by 2 about the centre: the centre pixels of the output interpolate the middle of the input.
  double = augment._resample(  # pylint: disable=protected-access
      x, 2 * ones, 2 * ones, zeros, zeros, reflect=True).numpy()
  c = (H - 1) / 2.0
  src = (np.arange(H) - c) / 2 + c
  lo = np.floor(src).astype(int)
  w = src - lo
  rows = (1 - w)[:, None] * np.eye(H)[lo] + w[:, None] * np.eye(H)[np.minimum(lo + 1, H - 1)]
  np.testing.assert_allclose(double, np.einsum("yk,bkxc,xl->bylc", rows, x.numpy(), rows.T), atol=1e-5)
  # Quarter turns are numpy's.
  turned = _apply(x, ["rot90"]).numpy()
  for i in range(B):
    assert any(np.array_equal(turned[i], np.rot90(x.numpy()[i], k, axes=(0, 1))) for k in range(4)), i


class _FixedDraws:
  """Stands in for augment._Draws: a transform's k-th draw is values[k] (one per example); integers must lie in the
  range the transform asks for."""

  def __init__(self, *values):
    self._values = list(values)

  def normal(self, stddev):
    del stddev
    return tf.constant(self._values.pop(0), tf.float32)

  def integers(self, minval, maxval):
    value = self._values.pop(0)
    assert np.all((minval <= np.array(value)) & (np.array(value) < maxval)), (value, minval, maxval)
    return tf.constant(value, tf.int32)


def _mirrored_bilinear(size, scale):
  """[size, size]: out[j] reads in[(j - c) / scale + c], bilinear, mirrored once at each border (enough for a
  factor of 1/2 or 2)."""
  c = (size - 1) / 2.0
  src = (np.arange(size) - c) / scale + c
  src = np.where(src < 0, -src, src)
  src = np.where(src > size - 1, 2 * (size - 1) - src, src)
  lo = np.floor(src).astype(int)
  w = src - lo
  return (1 - w)[:, None] * np.eye(size)[lo] + w[:, None] * np.eye(size)[np.minimum(lo + 1, size - 1)]


def test_aniso_with_a_fixed_factor_scales_x_by_s_and_y_by_one_over_s():
  """log2 s = 1 for every example: x is stretched by 2 and y squeezed by 2 (mirrored), as numpy resamples it."""
  x = _images(channels=2)
  out = augment.TRANSFORMS["aniso"](x, _FixedDraws([1.0] * B), tf.ones([B], tf.bool)).numpy()
  want = np.einsum("yk,bkxc,xl->bylc", _mirrored_bilinear(H, 0.5), x.numpy(), _mirrored_bilinear(H, 2.0).T)
  np.testing.assert_allclose(out, want, atol=1e-5)  # Isotropic (2, 2) or swapped axes differ by O(1).


def test_cutout_at_fixed_centres_zeroes_exactly_a_half_size_square_clipped_at_the_borders():
  """A 16 x 12 image: the square is 8 x 6 (half of each side), rows [cy - 4, cy + 4) and columns [cx - 3, cx + 3)
  of the drawn centre, the part inside the image zeroed and nothing else (DiffAugment's rand_cutout)."""
  height, width = 16, 12
  x = tf.random.stateless_uniform([4, height, width, 3], seed=[7, 1], minval=0.1, maxval=1.0)
  # Inside; half out at the top right; half out at the bottom left; touching the left border.
  centres_y, centres_x = [8, 0, 16, 5], [6, 12, 0, 3]
  out = augment.TRANSFORMS["cutout"](x, _FixedDraws(centres_y, centres_x), tf.ones([4], tf.bool)).numpy()
  keep = np.ones([4, height, width, 1], np.float32)
  for i, (cy, cx) in enumerate(zip(centres_y, centres_x)):
    keep[i, max(cy - 4, 0):cy + 4, max(cx - 3, 0):cx + 3] = 0.0
  assert (1 - keep).reshape(4, -1).sum(axis=1).tolist() == [8 * 6, 4 * 3, 4 * 3, 8 * 6]
  np.testing.assert_array_equal(out, x.numpy() * keep)


def test_scale_factors_are_2_to_the_normal_with_std_0_2_isotropic_for_scale_and_reciprocal_for_aniso():
  """ADA's scalings, drawn as training draws them: log2 of the factor ~ N(0, 0.2); scale uses it for both axes,
  aniso s for x and 1 / s for y. Each example's factors are read from its output: an image whose channels are
  ramps along x and along y comes out with slopes 1 / s_x and 1 / s_y at its centre."""
  n, size = 8000, 8
  c = (size - 1) / 2.0
  ramp = (np.arange(size, dtype=np.float32) - c) / c  # In [-1, 1]; bilinear interpolation keeps a ramp a ramp.
  images = tf.constant(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None]), axis=-1)[None].repeat(n, 0))
  for name, sign in (("scale", 1.0), ("aniso", -1.0)):
    out = augment.apply(images, [name], tf.constant([3, 4], tf.int64), 1.0, n).numpy()
    mid = size // 2  # Columns / rows mid - 1 and mid read c -+ 0.5 / s: inside the image for s > 1 / 7.
    log_x = np.log2(ramp[mid] - ramp[mid - 1]) - np.log2(out[:, mid, mid, 0] - out[:, mid, mid - 1, 0])
    log_y = np.log2(ramp[mid] - ramp[mid - 1]) - np.log2(out[:, mid, mid, 1] - out[:, mid - 1, mid, 1])
    np.testing.assert_allclose(log_y, sign * log_x, atol=1e-4, err_msg=name)  # float32 slopes: ~1e-6.
    # 8000 normals: standard errors 0.2 / sqrt(8000) = 0.0022 of the mean and 0.2 / sqrt(2 * 7999) = 0.0016 of the
    # std; 5 of them, so no seed fails by chance, while a std of 0.22 or 0.18 (10%, 12 of them off) would.
    assert abs(log_x.mean()) < 5 * 0.0022, (name, log_x.mean())
    assert abs(log_x.std() - 0.2) < 5 * 0.0016, (name, log_x.std())


def test_cutout_centres_are_uniform_over_every_position_of_a_square_touching_the_image():
  """Drawn as training draws them: each example loses one 8 x 6 square of a 16 x 12 image, clipped at the
  borders, and its centre row takes each of DiffAugment's 17 values (0 to 16: a square whose upper or lower half
  hangs out) about equally often."""
  n, height, width = 1700, 16, 12
  out = augment.apply(tf.ones([n, height, width, 1]), ["cutout"], tf.constant([3, 4], tf.int64), 1.0, n).numpy()
  cut = out[..., 0] == 0.0
  assert np.all((out == 0.0) | (out == 1.0))
  rows, cols = cut.any(axis=2), cut.any(axis=1)
  first_row, last_row = rows.argmax(axis=1), height - 1 - rows[:, ::-1].argmax(axis=1)
  first_col, last_col = cols.argmax(axis=1), width - 1 - cols[:, ::-1].argmax(axis=1)
  top = np.where(first_row > 0, first_row, last_row + 1 - 8)  # Clipped at the top: it ends at top + 8 all the same.
  left = np.where(first_col > 0, first_col, last_col + 1 - 6)
  ys, xs = np.arange(height), np.arange(width)
  square = (((ys >= top[:, None]) & (ys < top[:, None] + 8))[:, :, None]
            & ((xs >= left[:, None]) & (xs < left[:, None] + 6))[:, None, :])
  np.testing.assert_array_equal(cut, square)
  counts = np.bincount(top + 4, minlength=17)
  # 100 expected per centre row, binomial standard deviation 9.7: within 5 of them.
  assert len(counts) == 17 and np.all(np.abs(counts - 100) < 50), counts
  assert set(left + 3) == set(range(13))  # Centre columns 0 to 12.


def test_each_example_is_augmented_by_its_position_in_the_global_batch():
  """Two replicas, each augmenting its half with its rows of the global draws, give the global batch's images."""
  x = _images()
  policy = config_lib.augment_policy(config_lib.make_config(augment="ada"))
  whole = _apply(x, policy, p=0.7).numpy()
  halves = [_apply(x[r * 4:(r + 1) * 4], policy, p=0.7, rows=lambda v, r=r: v[r * 4:(r + 1) * 4]).numpy()
            for r in range(2)]
  # Batched matrix products of 4 and of 8 examples round differently (a few 1e-6 after nine transforms); wrong
  # draws would differ by O(1).
  np.testing.assert_allclose(np.concatenate(halves), whole, atol=2e-5)


def test_ada_update_moves_p_by_the_sign_of_r_t_minus_the_target():
  up = augment.ada_update(0.5, 0.9, 0.6, kimg=10.0, images=100).numpy()
  down = augment.ada_update(0.5, 0.2, 0.6, kimg=10.0, images=100).numpy()
  assert up == pytest.approx(0.51) and down == pytest.approx(0.49)
  assert augment.ada_update(0.999, 1.0, 0.6, 1.0, 64).numpy() == 1.0
  assert augment.ada_update(0.001, -1.0, 0.6, 1.0, 64).numpy() == 0.0


def test_penalties_differentiate_d_at_the_augmented_reals(tmp_path):
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=16)
  cfg = helpers.config(tmp_path, data_dir=idx, arch="mlp", latent_dim=8, augment="diffaug", r1_weight=1.0,
                       gp_weight=1.0, strategy="one_device")
  state = state_lib.create_state(cfg, tf.distribute.get_strategy(), 0)
  gan = state.gan
  batch = {"images": _images(channels=1, seed=2)[:, :, :, :][:, :16, :16], "labels": tf.zeros([B], tf.int32)}
  batch["images"] = tf.image.resize(batch["images"], [28, 28])
  inputs = train_step_lib.step_inputs(cfg, gan, tf.constant(2, tf.int64), 0)
  fwd = train_step_lib.forward(gan, batch, inputs, train_step_lib.augmenter(cfg, state))
  assert not np.allclose(fwd.real_images.numpy(), batch["images"].numpy())
  _, metrics = train_step_lib.d_loss(cfg, gan, fwd)
  d_of = lambda images: gan.discriminate(images, fwd.real_labels, training=True)
  on_augmented = np.mean(losses.r1_penalty(d_of, fwd.real_images).numpy())
  on_raw = np.mean(losses.r1_penalty(d_of, batch["images"]).numpy())
  assert float(metrics["r1_penalty"]) == pytest.approx(on_augmented, rel=1e-4)
  assert abs(on_raw - on_augmented) > 1e-3 * on_augmented


def _ada_cfg(tmp_path, **overrides):
  """ADA on an mlp. Two transforms of ADA's policy (one geometric, one colour) are enough for p's updates, its
  replicas and its resume, and trace in less time than the whole policy, whose transforms the tests above check."""
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=32, bad=())["root"]
  values = dict(dataset="folder", data_dir=folder, arch="mlp", channels=3, image_size=28, latent_dim=8,
                augment="ada", augment_policy="flip,brightness", ada_kimg=0.08, loss="hinge", d_lr=1e-2,
                steps_per_loop=1, train_steps=8)
  values.update(overrides)
  return helpers.config(tmp_path, **values)


@pytest.mark.slow
def test_ada_p_follows_r_t_and_is_one_value_on_one_device_and_two_replicas(tmp_path, one_device, mirrored2):
  """Step by step, p moves by sign(r_t - target) * batch / (ada_kimg * 1000) from the all-reduced r_t, up and down;
  both replicas hold the same p, and 2 replicas take the same p path as one device on the same global batch."""
  paths = []
  for strategy in (one_device, mirrored2):
    cfg = _ada_cfg(tmp_path)
    state, iterator, train = helpers.train_setup(cfg, strategy)
    p, path = 0.0, []
    for _ in range(cfg.train_steps):
      means = train(iterator, 1).means()
      assert means["augment_p"] == pytest.approx(p, abs=1e-6)  # The p this step augmented with.
      p = float(augment.ada_update(p, means["ada_rt"], cfg.ada_target, cfg.ada_kimg, cfg.batch_size))
      copies = helpers.replica_values(state.augment_p)
      assert len(copies) == strategy.num_replicas_in_sync and all(c == copies[0] for c in copies)
      assert copies[0] == pytest.approx(p, abs=1e-6)
      path.append((round(means["ada_rt"], 4), round(p, 4)))
    paths.append(path)
  assert paths[0] == paths[1]
  # p rose while D was over-confident on reals and fell back when it no longer was (D learns fast here).
  moves = np.diff([0.0] + [p for _, p in paths[0]])
  assert (moves > 0).any() and (moves < 0).any(), paths[0]


@pytest.mark.slow
def test_augmented_run_resumes_bit_for_bit_with_p(tmp_path, one_device, op_determinism):
  """--deterministic, through main: 6 steps straight, and a copy of the workdir as a run killed after step 3
  leaves it, resumed to 6, end with bitwise equal checkpoints, ADA's p included (and p != 0: it was restored)."""
  del op_determinism
  # D learns fast and the target is low: p > 0 at the interruption (after steps 1-3: r_t -0.75, 0.5, 1.0 on an
  # AVX-512 Xeon with ADA's whole policy, and on an AMD EPYC with _ada_cfg's) and at the end.
  base = _ada_cfg(tmp_path, deterministic=True, strategy="one_device", train_steps=6, steps_per_loop=3,
                  checkpoint_every=3, d_steps_per_g=2, ada_target=0.3)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  assert main.run_cli(straight, make_strategy=lambda _: one_device) == errors.EXIT_OK
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  helpers.interrupted_copy(straight.workdir, interrupted.workdir, 3)
  p = "augment_p/.ATTRIBUTES/VARIABLE_VALUE"
  assert helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-3"))[p] > 0
  assert main.run_cli(interrupted, make_strategy=lambda _: one_device) == errors.EXIT_OK
  a = helpers.checkpoint_values(os.path.join(straight.workdir, "checkpoints", "ckpt-6"))
  b = helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-6"))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert a[p] > 0


@pytest.mark.slow
def test_ada_p_is_one_value_on_two_workers(tmp_path):
  """2 workers (launch/local.sh): both save bitwise the same checkpoint, p included, and p rose."""
  # One D step per G step (the extra D steps add tracing to both workers, nothing to the claim). D learns fast and
  # the target is low: r_t 0.25, -0.75, -0.5, 0.5, 1.0, 1.0 on 1 device of an AMD EPYC (p 0.1 higher at each of
  # the last 3 steps).
  cfg = _ada_cfg(tmp_path, ada_target=0.3)
  workdir = tmp_path / "workdir"
  flags = [f"--{name}={getattr(cfg, name)}" for name in ("dataset", "data_dir", "arch", "channels", "image_size",
                                                          "latent_dim", "augment", "augment_policy", "ada_kimg",
                                                          "ada_target", "loss", "d_lr", "batch_size",
                                                          "d_steps_per_g")]
  flags += ["--train_steps=6", "--steps_per_loop=3", "--checkpoint_every=6", "--sample_every=1000",
            "--num_samples=4", f"--workdir={workdir}"]
  rc, out = subprocs.run(subprocs.local_sh_cmd(2, *flags), tmp_path / "local.out", subprocs.env(tmp_path))
  assert rc == 0, subprocs.tail(out)
  ckpt = str(workdir / "checkpoints" / "ckpt-6")
  fingerprint = checkpoint_lib.fingerprint(ckpt)
  assert helpers.worker_fingerprints(workdir, 6) == {0: fingerprint, 1: fingerprint}, subprocs.tail(out)
  assert helpers.checkpoint_values(ckpt)["augment_p/.ATTRIBUTES/VARIABLE_VALUE"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--augment=diffaug", "--augment_policy=color,blur"], "unknown transform 'blur'"),
    (["--augment=ada", "--ada_target=1.5"], "--ada_target=1.5: must be in (0, 1)"),
    (["--augment=ada", "--ada_target=0"], "must be in (0, 1)"),
    (["--augment=diffaug", "--ada_kimg=50"], "--ada_kimg=50.0 set without --augment=ada"),
    (["--augment_policy=flip"], "set with --augment=none"),
    (["--augment=ada", "--augment_policy=flip,flip"], "names a transform twice"),
])
def test_bad_augmentation_flags_are_refused_by_the_flag_rules(argv, message):
  """The rules of the config table, applied when the flags are parsed, before anything else: the command line
  turns the UserError into one line and exit 2 (tests/test_main.py::test_cli_bad_flag_and_traceback_only_with_
  verbosity), and make_config and flags.txt apply the same rules."""
  with pytest.raises(errors.UserError, match=re.escape(message)):
    config_lib.from_args(["--flagfile=configs/mlp_gan.cfg", *argv])


def test_consecutive_scalings_and_shifts_are_one_resampling_of_the_composed_map():
  """Scale by 2 then shift by (2, 3): one interpolation at the composed coordinates, equal to the two steps where
  the shift reads inside the image; examples whose maps do not apply come out bitwise unchanged."""
  x = _images()
  ones, zeros = tf.ones([B]), tf.zeros([B])
  everywhere, nowhere = tf.ones([B], tf.bool), tf.zeros([B], tf.bool)
  double, shift = (2 * ones, 2 * ones, zeros, zeros), (ones, ones, 2 * ones, 3 * ones)
  compose, resample = augment._composed_resample, augment._resample  # pylint: disable=protected-access
  composed = compose(x, [(everywhere, double), (everywhere, shift)]).numpy()
  steps = resample(resample(x, *double, reflect=True), *shift, reflect=True).numpy()
  np.testing.assert_allclose(composed[:, 2:, 3:], steps[:, 2:, 3:], atol=1e-5)
  half = tf.range(B) < B // 2
  mixed = compose(x, [(half, double), (nowhere, shift)]).numpy()
  np.testing.assert_array_equal(mixed[B // 2:], x.numpy()[B // 2:])
  np.testing.assert_allclose(mixed[:B // 2], resample(x, *double, reflect=True).numpy()[:B // 2], atol=1e-6)
