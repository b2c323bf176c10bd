"""The figures of a trained workdir, as the source projects show them.

  python -m gan_dist.plots --workdir=W [--out_dir=W/plots] [--step=N | --best] [--data_dir=D]

writes into --out_dir (default W/plots):
  losses.png              d_loss and g_loss against the step, D's outputs on real and fake images, and the
                          evaluation metrics if the run evaluated (--eval_every), read from W/tensorboard's events;
  real_vs_generated.png   training images beside generated ones (one row per class for conditional models,
                          labelled with the class names the run recorded: classes.json);
  progress.gif            the saved sample grids W/samples/step_*.png in step order, captioned with the step;
  interpolation.png       latent interpolation: each row walks on the great circle between two noise vectors
                          (a fixed class per row for conditional models);
  augmentation.png        runs with --augment: the same training images as D sees them at rising p (--augment_p;
                          the draws are fixed, so a transform applied at some p is applied at every higher p).
The figures themselves are drawn by `figures`; every file is written atomically through `files`, so W may be gs://.
--data_dir replaces the run's own (the training images moved).
"""

from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags
import numpy as np
import tensorflow as tf

from gan_dist import augment
from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import errors
from gan_dist import figures
from gan_dist import files
from gan_dist import inference
from gan_dist import models
from gan_dist import sampling
from gan_dist import summaries
from gan_dist import workdir as workdir_lib

COMPARISON_IMAGES = 100
AUGMENTATION_IMAGES = 10


def define_flags(fv: flags.FlagValues) -> None:
  """The flags of `python -m gan_dist.plots`, besides the Config's (it reads --workdir, and --data_dir if given)."""
  flags.DEFINE_string("out_dir", "", "Where to write the figures (default: <workdir>/plots).", flag_values=fv)
  cli.define_checkpoint_flags(fv, "Draw the generated figures with")
  cli.show_in_help(fv, ("workdir", "data_dir"))
  flags.DEFINE_list("augment_p", ["0", "0.2", "0.5", "0.8", "1"], "Values of p of augmentation.png (runs with "
                    "--augment).", flag_values=fv)


def real_grid_images(cfg: config_lib.Config, gan: models.Gan, num: int) -> Tuple[np.ndarray, Optional[int]]:
  """Training images for the comparison, and the rows of their grid.

  Conditional models: num // K images of each class, one row per class; otherwise the first `num` (rows None: a
  near-square grid). Works for every source (IDX, image folder, TFDS): only the chosen examples are decoded.

  Returns:
    uint8 [n, H, W, C] at the model's image shape, and the rows.
  """
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
  return sampling.to_uint8(images).numpy(), rows


def augmentation_rows(cfg: config_lib.Config, p_values: Sequence[float], num: int = AUGMENTATION_IMAGES
                      ) -> List[Tuple[str, np.ndarray]]:
  """[(label, uint8 [num, H, W, C])]: `num` training images (spread over the data) as D sees them under `cfg`'s
  augmentation at each p of `p_values`, drawn with one fixed seed (the draws of step 0)."""
  source = data.open_source(cfg)
  keep = np.linspace(0, source.num_examples - 1, min(num, source.num_examples)).astype(np.int64)
  subset = source.filtered(np.unique(keep), source.name)
  shape = (cfg.image_size, cfg.image_size, cfg.channels)
  images = np.concatenate([b["images"].numpy() for b in data.eval_dataset(subset, shape, 256)])
  policy = config_lib.augment_policy(cfg)
  seed = tf.constant([cfg.seed, 0], tf.int64)
  return [(f"p = {p:g}", sampling.to_uint8(augment.apply(images, policy, seed, p, len(images))).numpy())
          for p in p_values]


def write_all(workdir: str, out_dir: str = "", step: Optional[int] = None, data_dir: str = "",
              augment_p: Sequence[float] = (0.0, 0.2, 0.5, 0.8, 1.0), best: bool = False) -> Dict[str, str]:
  """Writes every figure of `workdir` into `out_dir` (default W/plots).

  Figures whose input is missing (no event files, no sample grids) are skipped with a message on stdout; the
  generated ones need a checkpoint. Everything is read and drawn before the first file is written, so a bad
  workdir, step or data_dir leaves `out_dir` as it was.

  Args:
    workdir: a trained run directory.
    out_dir: where the figures go; "" for `<workdir>/plots`.
    step: the checkpoint of the generated figures; None: the latest.
    data_dir: the training data, if not where the run read it ("" for the run's --data_dir).
    augment_p: the values of p of augmentation.png.
    best: the generated figures from the run's best checkpoint (kept by training with --eval_every) instead.

  Returns:
    {figure name: path} of the files written.
  """
  workdir = workdir.rstrip("/")
  out_dir = (out_dir or f"{workdir}/plots").rstrip("/")
  overrides = {"data_dir": data_dir} if data_dir else {}
  files.check_writable_dir(out_dir, "--out_dir")
  run = inference.load(workdir, step, best, **overrides)
  gan, generate_fn, cfg = run.gan, run.generate_fn(), run.cfg
  drawn = {}  # {figure name: (file name, PNG or GIF bytes)}, in the order they are written once all are drawn.
  logdir = workdir_lib.tensorboard_dir(workdir)
  scalars = figures.read_scalars(logdir)
  if scalars:
    drawn["losses"] = ("losses.png", figures.losses_figure(scalars, title=workdir))
  else:
    print(f"No scalars in {logdir}: losses.png skipped")
  grids = figures.sample_grid_paths(workdir)
  if grids:
    drawn["progress"] = ("progress.gif", figures.progress_gif([(at, files.read_bytes(path)) for at, path in grids]))
  else:
    print(f"No sample grids in {workdir_lib.samples_dir(workdir)}: progress.gif skipped")
  if cfg.augment != "none":
    policy = ",".join(config_lib.augment_policy(cfg))
    drawn["augmentation"] = ("augmentation.png", figures.augmentation_figure(
        augmentation_rows(cfg, augment_p), title=f"--augment={cfg.augment}: {policy}"))
  real, rows = real_grid_images(cfg, gan, COMPARISON_IMAGES)
  noise, labels, grid_rows = sampling.class_rows(COMPARISON_IMAGES, gan.latent_dim, gan.num_classes, cfg.seed,
                                                  cfg.truncation)
  fake = sampling.generate(generate_fn, noise, labels)
  names = run.class_names if gan.conditional else []  # Each row's class, named where the run recorded names.
  drawn["real_vs_generated"] = ("real_vs_generated.png", figures.comparison_figure(
      real, fake, rows=rows or grid_rows or None, title=f"{workdir}, step {run.step}",
      row_labels=[name or str(k) for k, name in enumerate(names)] if any(names) else None))
  noise, labels = figures.interpolation_inputs(gan.latent_dim, gan.num_classes, cfg.seed,
                                               truncation=cfg.truncation)
  strip = sampling.image_grid(sampling.generate(generate_fn, noise, labels), rows=figures.INTERPOLATION_ROWS)
  drawn["interpolation"] = ("interpolation.png", summaries.png_bytes(strip))
  written = {}
  for name, (file_name, payload) in drawn.items():
    written[name] = f"{out_dir}/{file_name}"
    files.write_atomic(written[name], payload)
  return written


def main(argv) -> None:
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS
  try:
    p_values = [float(p) for p in fv.augment_p]
  except ValueError:
    p_values = [-1.0]
  if not p_values or not all(0.0 <= p <= 1.0 for p in p_values):  # Empty: an augmentation.png of no rows.
    raise errors.UserError(f"--augment_p={','.join(fv.augment_p)}: values of p must be numbers in [0, 1] (one or "
                           "more, comma-separated)")
  written = write_all(fv.workdir, fv.out_dir, fv.step, fv.data_dir if fv["data_dir"].present else "", p_values,
                      fv.best)
  for name, path in written.items():
    print(f"{name}: {path}")


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
