"""figures.py: scalars read back from event files, and every figure decodes as the image it claims to be."""

import io

import numpy as np
from PIL import Image
import pytest

from gan_dist import errors
from gan_dist import figures
from gan_dist import sampling
from gan_dist import summaries


def _decode(payload: bytes) -> Image.Image:
  image = Image.open(io.BytesIO(payload))
  image.load()
  return image


def _write_events(logdir, points):
  writer = summaries.Writer(str(logdir), enabled=True)
  for step, values in points:
    writer.scalars(step, values)
  writer.image(points[0][0], "samples", np.zeros((4, 4, 1), np.uint8))
  writer.close()


def test_read_scalars_sorted_by_step_without_images(tmp_path):
  _write_events(tmp_path, [(2, {"d_loss": 0.5, "g_loss": 2.0}), (1, {"d_loss": 0.7})])
  scalars = figures.read_scalars(str(tmp_path))
  assert set(scalars) == {"d_loss", "g_loss"}  # The image is not a scalar.
  assert scalars["d_loss"] == [(1, pytest.approx(0.7)), (2, pytest.approx(0.5))]
  assert figures.read_scalars(str(tmp_path / "missing")) == {}


def test_a_later_event_file_wins_for_a_repeated_step(tmp_path):
  # A run resumed from step 1 logs step 2 again: the later file (the resumed run) is what the curve shows.
  _write_events(tmp_path, [(1, {"d_loss": 1.0}), (2, {"d_loss": 9.0})])
  _write_events(tmp_path, [(2, {"d_loss": 2.0}), (3, {"d_loss": 3.0})])
  assert figures.read_scalars(str(tmp_path))["d_loss"] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_a_resumed_runs_start_drops_what_earlier_files_hold_from_its_step_on(tmp_path):
  # A run killed after logging steps 1-4 with its last checkpoint at step 2: the resumed run marks step 3 as its
  # start, and only then logs step 3 (no step 4 yet). Step 4 of the killed run is gone, as in TensorBoard; the
  # first run's own start (the first of the run) drops nothing.
  for start, points in ((1, [(1, {"d_loss": 1.0}), (2, {"d_loss": 2.0}), (3, {"d_loss": 9.0}),
                             (4, {"d_loss": 9.0, "g_loss": 9.0})]),
                        (3, [(3, {"d_loss": 3.0})])):
    writer = summaries.Writer(str(tmp_path), enabled=True)
    writer.start(start)
    for step, values in points:
      writer.scalars(step, values)
    writer.close()
  assert figures.read_scalars(str(tmp_path)) == {"d_loss": [(1, 1.0), (2, 2.0), (3, 3.0)]}


def test_read_hparams_keeps_the_first_runs_as_tensorboard_does(tmp_path):
  for learning_rate in (0.1, 0.2):  # A later writer's HParams (an older gan_dist wrote them at every resume).
    writer = summaries.Writer(str(tmp_path), enabled=True)
    writer.hparams({"g_lr": learning_rate}, ["d_loss"] if learning_rate == 0.1 else ["g_loss"], trial_id="W")
    writer.close()
  assert figures.read_hparams(str(tmp_path)) == ({"g_lr": pytest.approx(0.1)}, ["d_loss"], "W")


def test_losses_figure_is_a_png_and_needs_losses():
  scalars = {"d_loss": [(1, 0.7), (2, 0.6)], "g_loss": [(1, 1.0), (2, 1.1)], "fcd": [(2, 30.0)]}
  image = _decode(figures.losses_figure(scalars, title="runs/x"))
  assert image.format == "PNG" and image.width < 1.5 * image.height  # One panel: "fcd" is not the trainer's tag.
  # The trainer's evaluation tags get their panels: FCD and label accuracy beside the losses.
  scalars.update({"eval/fcd": [(2, 30.0)], "eval/label_accuracy": [(2, 0.5)]})
  three = _decode(figures.losses_figure(scalars, title="runs/x"))
  assert three.width > 2.5 * image.width
  with pytest.raises(errors.UserError, match="no losses in the event files of runs/x"):
    figures.losses_figure({"other": [(1, 0.0)]}, title="runs/x")


def test_metrics_figure_is_a_png_with_a_panel_per_metric():
  rows = [dict(step=s, fcd=10.0 / s, kid=0.1 / s, precision=0.5, recall=0.4, label_accuracy=0.9) for s in (1, 2, 3)]
  wide = _decode(figures.metrics_figure(rows, floors={"fcd": 1.0}, title="W"))
  assert wide.format == "PNG" and wide.height > 400  # Five metrics: two rows of up to four panels.
  one = _decode(figures.metrics_figure([dict(seconds=1.0, fcd=3.0)], x="seconds"))
  assert one.width < wide.width


def test_comparison_figure_is_a_png_for_gray_and_color():
  gray = np.zeros((4, 28, 28, 1), np.uint8)
  color = np.ones((6, 8, 8, 3), np.float32)
  for real, fake in ((gray, gray), (color, color[:3])):
    assert _decode(figures.comparison_figure(real, fake, rows=2, title="t")).format == "PNG"


def test_sample_grid_paths_in_step_order(tmp_path):
  samples = tmp_path / "samples"
  samples.mkdir()
  for name in ("step_00000010.png", "step_00000002.png", "notes.png", "step_00000003.png.gan_dist_tmp"):
    (samples / name).write_bytes(b"")
  assert figures.sample_grid_paths(str(tmp_path)) == [(2, f"{samples}/step_00000002.png"),
                                                      (10, f"{samples}/step_00000010.png")]
  assert figures.sample_grid_paths(str(tmp_path / "missing")) == []


def test_progress_gif_has_a_captioned_frame_per_grid_and_holds_the_last():
  frames = []
  for step, value in ((2, 0), (4, 255)):
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 56), value, np.uint8)).save(buffer, format="PNG")
    frames.append((step, buffer.getvalue()))
  gif = _decode(figures.progress_gif(frames, frame_ms=100, min_side=100))
  assert gif.format == "GIF" and gif.n_frames == 2
  assert gif.size == (4 * 56, 4 * 28 + 16)  # Scaled by a whole factor to >= 100 pixels, plus the caption.
  durations = []
  for index in range(gif.n_frames):
    gif.seek(index)
    durations.append(gif.info["duration"])
  assert durations == [100, 400]
  with pytest.raises(ValueError, match="no frames"):
    figures.progress_gif([])


def test_interpolation_inputs_walk_between_noise_rows():
  noise, labels = figures.interpolation_inputs(latent_dim=6, num_classes=10, seed=5, rows=3, steps=4, truncation=0.0)
  assert noise.shape == (12, 6) and noise.dtype == np.float32 and labels.dtype == np.int32
  ends = sampling.noise(6, 6, 5, truncation=0.0)
  for row in range(3):
    np.testing.assert_allclose(noise[4 * row], ends[2 * row], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(noise[4 * row + 3], ends[2 * row + 1], rtol=1e-5, atol=1e-6)
    # Between them, the great circle at 1/3 and 2/3 of the way (a straight line between these ends is 0.2 to 0.5 off).
    np.testing.assert_allclose(noise[4 * row + 1:4 * row + 3],
                               sampling.slerp(ends[2 * row], ends[2 * row + 1], [1 / 3, 2 / 3]), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 4))
  _, labels = figures.interpolation_inputs(latent_dim=6, num_classes=0, seed=5, rows=3, steps=4, truncation=0.0)
  assert labels.shape == (12,) and not labels.any()
  # The run's --truncation: between truncated end points, as the demo's walk (serve/model.py) and sample grids.
  truncated, _ = figures.interpolation_inputs(latent_dim=6, num_classes=10, seed=5, rows=3, steps=4, truncation=0.5)
  ends = sampling.noise(6, 6, 5, truncation=0.5)
  np.testing.assert_allclose(truncated[[0, 3, 4, 7, 8, 11]], ends, rtol=1e-5, atol=1e-6)
  walks = np.concatenate([sampling.slerp(a, b, np.arange(4) / 3) for a, b in ends.reshape(3, 2, 6)])
  np.testing.assert_allclose(truncated, walks, rtol=1e-5, atol=1e-6)
  assert np.abs(ends).max() <= 0.5 and np.abs(truncated - noise).max() > 0.1
