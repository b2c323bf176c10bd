"""Train the feature network of a dataset ahead of evaluation, and print its test accuracy and checksum.

  python -m gan_dist.eval.classifier --dataset=mnist --data_dir=../shared/data/mnist [--image_shape=28,28,1]
      [--out=DIR] [--eval_cache_dir=DIR] [--steps=N]

trains the network (`gan_dist.eval.features`: architecture, fixed procedure, cache; supervised on greyscale labelled
data, contrastive on colour or unlabelled data) on the train split, prints its test accuracy (and, contrastive, its
view-match accuracy) and the checksum of its weights, and writes it to --out (default: where evaluation looks for
it, `<eval_cache_dir>/classifier/<key>/`), so later evaluations load it instead of training it. Bad input (too few
images, a malformed --image_shape, a missing --data_dir) is one line `error: ...` and exit code 2.
"""

from typing import Optional, Tuple

from absl import flags

from gan_dist import cli
from gan_dist import data
from gan_dist import errors
from gan_dist import files
from gan_dist.eval import features as features_lib


def define_flags(fv: flags.FlagValues) -> None:
  """Flags of this CLI, on top of the Config's (it reads --dataset, --data_dir, the flags that open it: --crop,
  --skip_bad_images, --data_cache_dir; and --eval_cache_dir)."""
  flags.DEFINE_string("image_shape", "", "H,W,C the network takes, e.g. 64,64,3 for --arch=dcgan64 (default: the "
                      "dataset's own shape).", flag_values=fv)
  flags.DEFINE_integer("steps", 0, "Contrastive procedure only (colour or unlabelled data): optimizer steps "
                       "(0: the procedure's own; another value gives a network of another cache key, which "
                       "evaluation does not use).", lower_bound=0, flag_values=fv)
  flags.DEFINE_string("out", "", "Directory to write weights.npz and info.json to (default: the evaluation cache "
                      "entry, <eval_cache_dir>/classifier/<key>, which evaluation then loads).", flag_values=fv)
  cli.show_in_help(fv, ("dataset", "data_dir", "crop", "skip_bad_images", "data_cache_dir", "eval_cache_dir"))


def parse_image_shape(text: str, source: data.DataSource) -> Tuple[int, int, int]:
  """(H, W, C) of --image_shape, or, if empty, of the images of an in-memory `source` (IDX).

  Raises:
    errors.UserError: `text` is not H,W,C of positive integers, or it is empty and `source` has no single shape.
  """
  if not text:
    if not isinstance(source, data.IdxSource):
      raise errors.UserError(f"{source.name} has no single image shape; pass --image_shape=H,W,C (the generator's, "
                             "e.g. --image_shape=64,64,3)")
    shape = tuple(int(d) for d in source.images.shape[1:])
    return shape if len(shape) == 3 else (*shape, 1)
  try:
    shape = tuple(int(d) for d in text.split(","))
  except ValueError:
    shape = ()
  if len(shape) != 3 or min(shape) < 1:
    raise errors.UserError(f"--image_shape={text!r} must be H,W,C, e.g. --image_shape=28,28,1")
  return shape


def main(argv, fv: Optional[flags.FlagValues] = None) -> int:
  """Trains, writes and reports the network. `fv`: parsed flag values (default: absl's FLAGS)."""
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS if fv is None else fv
  cfg = cli.config_from_flags(fv)
  # Where the network goes is checked before it trains (minutes).
  if fv.out:
    files.check_writable_dir(fv.out.rstrip("/"), "--out")
  else:
    files.check_writable_dir(features_lib.cache_root(cfg), "--eval_cache_dir")
  train_source, test_source = features_lib.training_splits(cfg)
  image_shape = parse_image_shape(fv.image_shape, train_source)
  if fv.steps and features_lib.kind(image_shape, train_source.num_classes) == "supervised":
    raise errors.UserError(f"--steps={fv.steps} sets the contrastive procedure's length; {train_source.name} "
                           "(greyscale, labelled) trains the supervised one, whose length is fixed: drop --steps")
  net = features_lib.train_net(cfg, image_shape, train_source, test_source, steps=fv.steps or None)
  out = fv.out.rstrip("/") or features_lib.net_dir(cfg, net.key)
  features_lib.save(net, out)
  print(f"Feature network {net.key} ({train_source.name}; {train_source.num_examples} train, "
        f"{test_source.num_examples} test examples)")
  print(f"test accuracy: {features_lib.format_accuracy(net.test_accuracy)}")
  if "view_match_accuracy" in net.info:
    print(f"view-match accuracy: {net.info['view_match_accuracy']:.4f}")
  print(f"checksum: {net.checksum}")
  print(f"written to: {out}")
  return errors.EXIT_OK


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
