"""The figures of a trained workdir, as the source projects show them.

  python -m gan_dist.plots --workdir=W [--out_dir=W/plots] [--step=N]

writes into --out_dir (default W/plots):
  losses.png              d_loss and g_loss against the step, D's outputs on real and fake images, and the
                          evaluation metrics if the run evaluated (--eval_every), read from W/tensorboard's events;
  real_vs_generated.png   training images beside generated ones (one row per class for conditional models);
  progress.gif            the saved sample grids W/samples/step_*.png in step order, captioned with the step;
  interpolation.png       latent interpolation: each row walks on the great circle between two noise vectors
                          (a fixed class per row for conditional models).
Every file goes through tf.io.gfile (matplotlib and PIL render to memory first), so W may be gs://.
"""

import io
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np
import tensorflow as tf

from gan_dist import errors
from gan_dist import flags as gan_flags
from gan_dist import summaries

INTERPOLATION_ROWS = 8
INTERPOLATION_STEPS = 10
COMPARISON_IMAGES = 100
_STEP_PNG = re.compile(r"step_(\d+)\.png$")


def write_bytes(path: str, payload: bytes) -> None:
  """Writes `payload` to `path` on any TensorFlow filesystem (temporary name + rename)."""
  if "/" in path:
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  tmp = path + gan_flags.TMP_SUFFIX
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(payload)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # No display; render to memory.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _png(fig) -> bytes:
  plt = _pyplot()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  return buffer.getvalue()


def read_scalars(logdir: str) -> Dict[str, List[Tuple[int, float]]]:
  """{tag: [(step, value)] sorted by step} of every scalar in the event files under `logdir`."""
  found: Dict[str, Dict[int, float]] = {}
  for path in sorted(tf.io.gfile.glob(f"{logdir.rstrip('/')}/events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
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
        found.setdefault(value.tag, {})[int(event.step)] = number  # A resumed run's later value wins.
  return {tag: sorted(points.items()) for tag, points in found.items()}


def losses_figure(scalars: Dict[str, List[Tuple[int, float]]], title: str = "") -> bytes:
  """PNG: losses, D's outputs and (if present) the evaluation metrics against the step."""
  plt = _pyplot()
  panels = [("losses", ["d_loss", "g_loss"]), ("D outputs (probability)", ["d_real_output", "d_fake_output"]),
            ("FCD (lower is better)", ["fcd"]), ("label accuracy", ["label_accuracy"])]
  panels = [(name, [t for t in tags if t in scalars]) for name, tags in panels]
  panels = [(name, tags) for name, tags in panels if tags]
  if not panels:
    raise errors.UserError(f"no losses in the event files of {title or 'the run'}: has it trained a summary step yet?")
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
  return _png(fig)


def metrics_figure(rows: Sequence[dict], floors: Optional[Dict[str, float]] = None, title: str = "",
                   x: str = "step") -> bytes:
  """PNG: every metric of `rows` ([{x: .., name: value}]) against `x`, one panel each, the real-data floor dashed."""
  plt = _pyplot()
  floors = floors or {}
  names = [n for n in ("fcd", "kid", "classifier_score", "precision", "recall", "label_accuracy", "fid",
                       "inception_score") if any(n in r for r in rows)]
  cols = min(4, len(names)) or 1
  fig, axes = plt.subplots((len(names) + cols - 1) // cols or 1, cols, figsize=(4 * cols, 3.2 * ((len(names) + cols
                                                                                                    - 1) // cols or 1)),
                           squeeze=False)
  for ax, name in zip(axes.flat, names):
    points = [(r[x], r[name]) for r in rows if name in r]
    ax.plot(*zip(*points), marker="o", label="generated")
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
  return _png(fig)


def comparison_figure(real: np.ndarray, fake: np.ndarray, rows: Optional[int] = None, title: str = "") -> bytes:
  """PNG: a grid of real images beside a grid of generated ones (uint8 or [-1, 1] arrays [N, H, W, C])."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
  for ax, images, name in ((axes[0], real, "real (training data)"), (axes[1], fake, "generated")):
    grid = summaries.image_grid(images, rows=rows)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None,
              vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(name)
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _png(fig)


def sample_grid_paths(workdir: str) -> List[Tuple[int, str]]:
  """[(step, path)] of W/samples/step_*.png, by step."""
  found = []
  for path in tf.io.gfile.glob(f"{workdir.rstrip('/')}/samples/step_*.png"):
    match = _STEP_PNG.search(path)
    if match:
      found.append((int(match.group(1)), path))
  return sorted(found)


def progress_gif(frames: Sequence[Tuple[int, bytes]], frame_ms: int = 400, min_side: int = 280) -> bytes:
  """GIF bytes of PNG frames [(step, png bytes)], each captioned "step N" and scaled up to at least `min_side`."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  images = []
  for step, png in frames:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = max(1, -(-min_side // min(image.size)))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (image.width, image.height + 16), "white")
    canvas.paste(image, (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), f"step {step}", fill="black")
    images.append(canvas)
  if not images:
    raise ValueError("no frames")
  buffer = io.BytesIO()
  # The last frame stays up longer, so the final samples can be looked at.
  durations = [frame_ms] * (len(images) - 1) + [frame_ms * 4]
  images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
  return buffer.getvalue()


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation of vectors a, b [D] at fractions t [T] -> [T, D] (Gaussian noise has most mass on a
  sphere; a straight line passes through the low-norm middle the generator never saw)."""
  cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if omega < 1e-6:
    return (1 - t)[:, None] * a + t[:, None] * b
  return (np.sin((1 - t) * omega)[:, None] * a + np.sin(t * omega)[:, None] * b) / np.sin(omega)


def interpolation_inputs(gan, seed: int, rows: int = INTERPOLATION_ROWS, steps: int = INTERPOLATION_STEPS):
  """Noise [rows * steps, latent_dim] and labels [rows * steps] (class r mod K in row r, or None)."""
  rng = np.random.RandomState(seed)
  ends = rng.standard_normal((rows, 2, gan.latent_dim)).astype(np.float32)
  t = np.linspace(0.0, 1.0, steps)
  noise = np.concatenate([slerp(a, b, t) for a, b in ends]).astype(np.float32)
  labels = np.repeat(np.arange(rows) % gan.num_classes, steps).astype(np.int32) if gan.conditional else None
  return noise, labels


def real_grid_images(cfg, gan, num: int) -> Tuple[np.ndarray, Optional[int]]:
  """uint8 training images for the comparison: one row per class (conditional) or the first `num`; and the rows.

  Works for every source (IDX, image folder, TFDS): the examples are read through `data.eval_dataset`, so only the
  chosen ones are decoded.
  """
  from gan_dist import data  # pylint: disable=g-import-not-at-top
  source = data.open_source(cfg)
  if gan.conditional:
    per_class = max(1, num // gan.num_classes)
    labels = np.asarray(source.example_labels())
    index = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(gan.num_classes)])
    rows = gan.num_classes
  else:
    index, rows = np.arange(min(num, source.num_examples)), None
  subset = source.filtered(index.astype(np.int64), source.name)
  images = np.concatenate([b["images"].numpy() for b in data.eval_dataset(subset, gan.image_shape, 256)])
  return summaries.to_uint8(images), rows


def write_all(workdir: str, out_dir: str = "", step: Optional[int] = None, data_dir: str = "") -> Dict[str, str]:
  """Writes every figure of `workdir` into `out_dir` (default W/plots); returns {figure: path} of those written.

  Figures whose input is missing (no event files, no sample grids) are skipped with a message on stdout.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  from gan_dist import sample as sample_lib  # pylint: disable=g-import-not-at-top
  workdir = workdir.rstrip("/")
  out_dir = (out_dir or f"{workdir}/plots").rstrip("/")
  written = {}
  scalars = read_scalars(f"{workdir}/tensorboard")
  if scalars:
    written["losses"] = f"{out_dir}/losses.png"
    write_bytes(written["losses"], losses_figure(scalars, title=workdir))
  else:
    print(f"No scalars in {workdir}/tensorboard: losses.png skipped")
  grids = sample_grid_paths(workdir)
  if grids:
    frames = []
    for at, path in grids:
      with tf.io.gfile.GFile(path, "rb") as f:
        frames.append((at, f.read()))
    written["progress"] = f"{out_dir}/progress.gif"
    write_bytes(written["progress"], progress_gif(frames))
  else:
    print(f"No sample grids in {workdir}/samples: progress.gif skipped")

  cfg, state = sample_lib.load_workdir(workdir, step)
  if data_dir:
    cfg = dataclasses.replace(cfg, data_dir=data_dir)
  state.prepare_ema()
  gan = state.gan
  generate_fn = sample_lib.make_generate_fn(state.sampling_generator, gan)
  at = int(state.step.numpy())
  real, rows = real_grid_images(cfg, gan, COMPARISON_IMAGES)
  noise, labels, grid_rows = sample_lib.grid_inputs(gan, COMPARISON_IMAGES, cfg.seed)
  fake = sample_lib.generate(generate_fn, gan, noise, labels)
  written["real_vs_generated"] = f"{out_dir}/real_vs_generated.png"
  write_bytes(written["real_vs_generated"],
              comparison_figure(real, fake, rows=rows or grid_rows or None, title=f"{workdir}, step {at}"))
  noise, labels = interpolation_inputs(gan, cfg.seed)
  strip = summaries.image_grid(sample_lib.generate(generate_fn, gan, noise, labels), rows=INTERPOLATION_ROWS)
  written["interpolation"] = f"{out_dir}/interpolation.png"
  summaries.write_png(written["interpolation"], strip)
  return written


def define_flags(fv) -> None:
  """Flags of this CLI, on top of gan_dist's --workdir and --data_dir (default: the run's)."""
  gan_flags.define_plots_flags(fv)


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  written = write_all(fv.workdir, fv.out_dir, fv.step, fv.data_dir if fv["data_dir"].present else "")
  for name, path in written.items():
    print(f"{name}: {path}")


def run():
  gan_flags.run_tool(main, define_flags)


if __name__ == "__main__":
  run()
