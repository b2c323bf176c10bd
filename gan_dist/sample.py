"""Samples a trained workdir into an .npz file and/or a PNG grid.

  python -m gan_dist.sample --workdir=W --num=64 --out=samples.npz [--label=K|NAME] [--seed=S] [--step=N | --best]
  python -m gan_dist.sample --workdir=W --num=100 --grid=grid.png     (one row per class when conditional)
  python -m gan_dist.sample --workdir=W --grid=grid.png --truncation=0.5   (BigGAN's truncation trick)

The .npz holds `images` (uint8 [N, H, W, C]) and, for conditional models, `labels` (int32 [N]), drawn from the
latest checkpoint (or --step, or --best: the best one that training with --eval_every kept) by the generator
`inference.load` picks (the EMA copy when the run kept one). Image i of seed S is that of `sampling.inputs`'s noise
and labels, as the web demo's for that seed (with the run's --truncation, or this command's): the same bytes for a
float32 run; a mixed-precision run computes here in its precision, in the demo and the exports in float32 (rounding
apart). It reads W and never writes to it.
"""

import io
from typing import Optional

from absl import flags
import numpy as np

from gan_dist import cli
from gan_dist import errors
from gan_dist import files
from gan_dist import inference
from gan_dist import sampling
from gan_dist import summaries


def define_flags(fv: flags.FlagValues) -> None:
  """The flags of `python -m gan_dist.sample`, besides the Config's (it reads --workdir, --seed as the noise seed,
  and --truncation, which overrides the run's)."""
  flags.DEFINE_integer("num", 64, "Number of images to sample.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("out", "samples.npz", "Output .npz file (images uint8 [N, H, W, C]; labels if conditional).",
                      flag_values=fv)
  flags.DEFINE_string("label", None, "Conditional models: sample this class only, by its id or by the name the run "
                      "recorded for it (a class folder's, e.g. --label=cat); default: cycle through the classes.",
                      flag_values=fv)
  cli.define_checkpoint_flags(fv, "Sample")
  cli.show_in_help(fv, ("workdir", "seed", "truncation"))
  flags.DEFINE_string("grid", "", "Also write the images as one PNG grid to this file (conditional models: one row "
                      "per class: --num rounded down to whole rows, at least one image per class); with --grid and "
                      "no --out, only the grid.", flag_values=fv)


def write_npz(path: str, arrays: dict) -> None:
  """Writes `arrays` ({name: array}) as a compressed .npz, atomically, on any TensorFlow filesystem."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  files.write_atomic(path, buffer.getvalue())


def sample(run: inference.Run, num: int, seed: int, label: Optional[int] = None) -> dict:
  """{"images": uint8 [num, H, W, C]} (+ "labels": int32 [num] for conditional models) of `sampling.inputs`.

  Raises:
    errors.UserError: `label` is not a class of the model.
  """
  noise, labels = sampling.inputs(num, run.gan.latent_dim, run.gan.num_classes, seed, label,
                                  truncation=run.cfg.truncation)
  arrays = {"images": sampling.to_uint8(sampling.generate(run.generate_fn(), noise, labels)).numpy()}
  if run.gan.conditional:
    arrays["labels"] = labels
  return arrays


def grid_image(run: inference.Run, num: int, seed: int, label: Optional[int], images: np.ndarray) -> np.ndarray:
  """The --grid picture: uint8 [rows * H, columns * W, C].

  A conditional model without `label` gets one row per class (`sampling.class_rows`: num // K images of each
  class, the layout of the training grids); otherwise `images` (those sampled) form a near-square grid.
  """
  if run.gan.conditional and label is None:
    noise, labels, rows = sampling.class_rows(num, run.gan.latent_dim, run.gan.num_classes, seed, run.cfg.truncation)
    return sampling.image_grid(sampling.generate(run.generate_fn(), noise, labels), rows=rows)
  return sampling.image_grid(images)


def main(argv) -> None:
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS
  write_npz_file = fv["out"].present or not fv.grid
  for flag, path, given in (("--grid", fv.grid, bool(fv.grid)), ("--out", fv.out, write_npz_file)):
    if given:  # Checked before sampling, which may take minutes.
      files.check_writable_file(path, flag)
  if fv.grid and not fv.grid.lower().endswith(".png"):  # A g.jpg of PNG bytes misleads every viewer.
    raise errors.UserError(f"--grid={fv.grid}: the grid is a PNG image; give a file name ending in .png")
  if write_npz_file and not fv.out.lower().endswith(".npz"):  # E.g. --out=grid.png: a zip archive named as a PNG.
    raise errors.UserError(f"--out={fv.out}: the samples are an .npz archive (images, labels); give a file name "
                           "ending in .npz (--grid=FILE.png writes a PNG grid)")
  run = inference.load(fv.workdir, fv.step, fv.best, **cli.given(fv, ("truncation",)))
  sampling.check_memory(fv.num, run.gan.image_shape, run.gan.latent_dim, "--num")
  label = run.class_id(fv.label, "--label")
  arrays = sample(run, fv.num, fv.seed, label)
  images = arrays["images"]
  if fv.grid:
    grid = grid_image(run, fv.num, fv.seed, label, images)
    summaries.write_png(fv.grid, grid)
    print(f"Wrote a {grid.shape[1]}x{grid.shape[0]} grid ({run.describe()}) to {fv.grid}")
    if not write_npz_file:
      return
  write_npz(fv.out, arrays)
  print(f"Wrote {len(images)} images {images.shape[1:]} ({run.describe()}) to {fv.out}")


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
