"""Figures of a run as bytes: loss and metric curves (PNG), real beside generated images, the progress GIF.

Every function returns the encoded file (matplotlib and PIL render to memory); callers write it with
`files.write_atomic`, so a figure may go to any TensorFlow filesystem. Used by `gan_dist.plots` and
`gan_dist.evaluate --all`.

  scalars = figures.read_scalars(workdir.tensorboard_dir(W))
  files.write_atomic("losses.png", figures.losses_figure(scalars, title=W))
"""

import io
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tensorboard.plugins.hparams import plugin_data_pb2
import tensorflow as tf

from gan_dist import errors
from gan_dist import sampling
from gan_dist import workdir as workdir_lib

INTERPOLATION_ROWS = 8
INTERPOLATION_STEPS = 10
_STEP_PNG = re.compile(r"step_(\d+)\.png$")
# Panels of losses_figure: (title, scalar tags); a panel none of whose tags the run logged is left out.
_LOSS_PANELS = (("losses", ("d_loss", "g_loss")), ("D outputs (probability)", ("d_real_output", "d_fake_output")),
                ("FCD (lower is better)", ("eval/fcd",)), ("label accuracy", ("eval/label_accuracy",)))
# Metrics of metrics_figure, in panel order.
_METRICS = ("fcd", "kid", "classifier_score", "precision", "recall", "label_accuracy", "fid", "inception_score")

Scalars = Dict[str, List[Tuple[int, float]]]


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display; figures render to memory).

  Imported on first use: matplotlib takes a second to import, and most gan_dist commands draw nothing.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def to_png(fig) -> bytes:
  """The PNG bytes of a matplotlib figure, which is then closed."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  pyplot().close(fig)
  return buffer.getvalue()


def read_scalars(logdir: str) -> Scalars:
  """{tag: [(step, value)] sorted by step} of every scalar in the event files directly under `logdir`.

  Images and non-scalar tensors are skipped. Read as TensorBoard reads a run: where a run resumed after a kill, its
  SessionLog.START (summaries.Writer.start) drops the points earlier files hold at its step and later, those the
  killed run logged after the checkpoint it resumed from. A step logged twice otherwise keeps the later file's value.
  """
  found: Dict[str, Dict[int, float]] = {}
  started = False
  for event in _events(logdir):
    if event.HasField("session_log") and event.session_log.status == tf.compat.v1.SessionLog.START:
      # TensorBoard ignores a run's first START: nothing precedes it.
      if started:
        for points in found.values():
          for step in [s for s in points if s >= event.step]:
            del points[step]
      started = True
    for value in event.summary.value:
      if value.HasField("tensor"):
        array = tf.make_ndarray(value.tensor)
        if array.ndim != 0 or not np.issubdtype(array.dtype, np.number):
          continue
        number = float(array)
      elif value.HasField("simple_value"):
        number = float(value.simple_value)
      else:
        continue
      found.setdefault(value.tag, {})[int(event.step)] = number
  return {tag: sorted(points.items()) for tag, points in found.items() if points}


def read_hparams(logdir: str) -> Tuple[Dict[str, object], List[str], str]:
  """(the run's HParams {name: value}, the metric tags of its HParams layout, the run's name in the table), as
  TensorBoard's HParams dashboard reads them from the event files directly under `logdir`: the first ones written
  win, as there (the trainer writes them once, when a run starts afresh)."""
  values: Optional[Dict[str, object]] = None
  metrics: Optional[List[str]] = None
  name = ""
  for event in _events(logdir):
    for value in event.summary.value:
      if value.metadata.plugin_data.plugin_name != "hparams":
        continue
      content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
      if content.HasField("session_start_info") and values is None:
        values = {key: getattr(v, v.WhichOneof("kind"))
                  for key, v in content.session_start_info.hparams.items()}
        name = content.session_start_info.group_name
      if content.HasField("experiment") and metrics is None:
        metrics = [info.name.tag for info in content.experiment.metric_infos]
  return values or {}, metrics or [], name


def _events(logdir: str) -> Iterator[tf.compat.v1.Event]:
  """The Event protos of the event files directly under `logdir`, in writing order (TensorBoard's reading order)."""
  for path in sorted(workdir_lib.event_files(logdir), key=_event_file_order):
    for record in tf.data.TFRecordDataset(path):
      yield tf.compat.v1.Event.FromString(record.numpy())


def _event_file_order(path: str) -> Tuple[int, int, str]:
  """Writing order of event files `events.out.tfevents.<seconds>.<host>.<pid>.<counter>.v2`: by time, then by the
  writer counter as a number (by name, a tenth writer of the same second would sort before the ninth)."""
  parts = path.rsplit("/", 1)[-1].split(".")
  seconds = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
  counter = int(parts[-2]) if len(parts) > 5 and parts[-1] == "v2" and parts[-2].isdigit() else 0
  return seconds, counter, path


def losses_figure(scalars: Scalars, title: str = "") -> bytes:
  """PNG: losses, D's outputs and (if logged) FCD and label accuracy against the step, one panel each.

  Raises:
    errors.UserError: `scalars` holds none of the losses (the run has not written a summary yet).
  """
  panels = [(name, [t for t in tags if t in scalars]) for name, tags in _LOSS_PANELS]
  panels = [(name, tags) for name, tags in panels if tags]
  if not panels:
    raise errors.UserError(f"no losses in the event files of {title or 'the run'}: has it trained a summary step yet?")
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
  for ax, (name, tags) in zip(axes[0], panels):
    for tag in tags:
      steps, values = zip(*scalars[tag])
      ax.plot(steps, values, label=tag, marker="." if len(steps) < 30 else None)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return to_png(fig)


def metrics_figure(rows: Sequence[dict], floors: Optional[Dict[str, float]] = None, title: str = "",
                   x: str = "step") -> bytes:
  """PNG: every evaluation metric of `rows` against `x`, one panel each (4 per row), the real-data floor dashed.

  Args:
    rows: [{x: value, metric name: value, ...}], e.g. one per evaluated checkpoint.
    floors: {metric name: the value of real test images}, drawn as a horizontal line.
    title: the figure's title (e.g. the workdir).
    x: the key of `rows` on the horizontal axis.
  """
  floors = floors or {}
  names = [n for n in _METRICS if any(n in r for r in rows)]
  cols = min(4, len(names)) or 1
  lines = -(-len(names) // cols) or 1
  plt = pyplot()
  fig, axes = plt.subplots(lines, cols, figsize=(4 * cols, 3.2 * lines), squeeze=False)
  for ax, name in zip(axes.flat, names):
    ax.plot(*zip(*[(r[x], r[name]) for r in rows if name in r]), marker="o", label="generated")
    if name in floors:
      ax.axhline(floors[name], linestyle="--", color="gray", label="real test images")
    ax.set_title(name)
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return to_png(fig)


def comparison_figure(real: np.ndarray, fake: np.ndarray, rows: Optional[int] = None, title: str = "",
                      row_labels: Optional[Sequence[str]] = None) -> bytes:
  """PNG: a grid of real images beside a grid of generated ones.

  Args:
    real, fake: [N, H, W, C] images, uint8 or float in [-1, 1] (N may differ).
    rows: rows of both grids (e.g. one per class); None: near-square.
    title: the figure's title.
    row_labels: a label left of each row (`rows` of them, e.g. the class names); None: no labels.
  """
  return grids_figure([("real (training data)", sampling.image_grid(real, rows=rows)),
                       ("generated", sampling.image_grid(fake, rows=rows))], title, row_labels)


def grids_figure(panels: Sequence[Tuple[str, np.ndarray]], title: str = "",
                 row_labels: Optional[Sequence[str]] = None) -> bytes:
  """PNG: image grids side by side, each titled (e.g. the final samples of several configs).

  Args:
    panels: [(title, uint8 grid [H, W, C])], C 1 or 3.
    title: the figure's title.
    row_labels: a label left of each row of the first grid (the grids have that many rows); None: no labels.
  """
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5.3), squeeze=False)
  for ax, (name, grid) in zip(axes[0], panels):
    gray = grid.shape[-1] == 1
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray" if gray else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(name, fontsize=10)
    ax.axis("off")
  for r, label in enumerate(row_labels or ()):
    height, width = panels[0][1].shape[:2]
    # Pixel centres are at integers: the image's left edge is at x = -0.5.
    axes[0, 0].text(-0.5 - 0.02 * width, (r + 0.5) * height / len(row_labels) - 0.5, label, ha="right",
                    va="center", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return to_png(fig)


def augmentation_figure(rows: Sequence[Tuple[str, np.ndarray]], title: str = "") -> bytes:
  """PNG: one row of images per entry of `rows` [(label, [N, H, W, C] uint8 or float in [-1, 1])], labelled on
  the left (e.g. the same real images augmented at rising p)."""
  plt = pyplot()
  first = sampling.image_grid(rows[0][1], rows=1)
  width = 10.0
  height = width * first.shape[0] / first.shape[1] * len(rows) + 0.6
  fig, axes = plt.subplots(len(rows), 1, figsize=(width, height), squeeze=False)
  for ax, (label, images) in zip(axes[:, 0], rows):
    grid = sampling.image_grid(images, rows=1)
    gray = grid.shape[-1] == 1
    ax.imshow(grid[..., 0] if gray else grid, cmap="gray" if gray else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return to_png(fig)


def sample_grid_paths(workdir: str) -> List[Tuple[int, str]]:
  """[(step, path)] of the training sample grids `<workdir>/samples/step_*.png`, by step."""
  found = []
  for path in workdir_lib.sample_grid_files(workdir):
    match = _STEP_PNG.search(path)
    if match:
      found.append((int(match.group(1)), path))
  return sorted(found)


def progress_gif(frames: Sequence[Tuple[int, bytes]], frame_ms: int = 400, min_side: int = 280) -> bytes:
  """GIF of PNG frames, each captioned "step N" and scaled up by a whole factor to at least `min_side` pixels.

  Args:
    frames: [(step, PNG bytes)] in display order.
    frame_ms: display time of each frame; the last stays four times as long, so the final samples can be looked at.
    min_side: the shorter side of a frame after scaling (nearest neighbour: pixels stay sharp).

  Raises:
    ValueError: no frames.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top  (as pyplot: only when drawing)
  if not frames:
    raise ValueError("no frames")
  images = []
  for step, png in frames:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = max(1, -(-min_side // min(image.size)))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (image.width, image.height + 16), "white")
    canvas.paste(image, (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), f"step {step}", fill="black")
    images.append(canvas)
  buffer = io.BytesIO()
  durations = [frame_ms] * (len(images) - 1) + [frame_ms * 4]
  images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
  return buffer.getvalue()


def interpolation_inputs(latent_dim: int, num_classes: int, seed: int, rows: int = INTERPOLATION_ROWS,
                         steps: int = INTERPOLATION_STEPS, *, truncation: float) -> Tuple[np.ndarray, np.ndarray]:
  """Inputs of a latent interpolation figure: each row walks on the great circle between two noise vectors.

  The end points of row r are rows 2r and 2r + 1 of `sampling.noise(2 * rows, latent_dim, seed, truncation)` (as
  the demo's walk, between truncated end points); row r has class r mod num_classes (conditional models;
  unconditional ones get zeros, which they ignore).

  Returns:
    noise float32 [rows * steps, latent_dim], labels int32 [rows * steps]; row by row.
  """
  ends = sampling.noise(2 * rows, latent_dim, seed, truncation).reshape(rows, 2, latent_dim)
  t = np.linspace(0.0, 1.0, steps)
  noise = np.concatenate([sampling.slerp(a, b, t) for a, b in ends]).astype(np.float32)
  return noise, np.repeat(sampling.labels(rows, num_classes), steps)
