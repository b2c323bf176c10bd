"""Entry point: python -m gan_dist.main --strategy=mirrored --flagfile=configs/dcgan.cfg [--flag=value ...]

`--helpfull` lists every flag (defined in gan_dist/flags.py). The exit codes are listed in gan_dist/errors.py and in
README "When things go wrong": gan_dist's own outcomes (bad input, divergence, a damaged checkpoint, a failed peer,
preemption) end with one line `error: ...` (the traceback too with --verbosity=1); anything else is a bug or an
environment problem and keeps its full traceback.
"""

import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from gan_dist import errors
from gan_dist import flags as gan_flags
from gan_dist import strategy as strategy_lib

FLAGS = flags.FLAGS
_HELP = "--helpfull lists every flag"


def _fail(message: str, code: int = errors.EXIT_USAGE, verbose: bool = False):
  if verbose:
    traceback.print_exc()
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  return code


def parse_flags(argv, fv: flags.FlagValues = FLAGS) -> list:
  """absl's parsing, with every flag and flagfile problem answered in one line and exit code 2.

  A flagfile line that is not `--name=value` reaches absl as a positional argument, which gan_dist never takes.
  """
  try:
    rest = fv(argv)
  except flags.Error as e:
    sys.exit(_fail(f"{e} ({_HELP})"))
  if len(rest) > 1:
    sys.exit(_fail(f"unexpected argument {rest[1]!r}: flags are --name=value, on the command line or one per line of "
                   f"a --flagfile ({_HELP})"))
  return rest


def run_cli(cfg, make_strategy=strategy_lib.make, verbose: bool = False) -> int:
  """Runs a training job for `cfg`; returns the process exit code (see errors.py). Used by `main` and tests."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from gan_dist import data  # pylint: disable=g-import-not-at-top
  from gan_dist import train  # pylint: disable=g-import-not-at-top
  try:
    train.check_config(cfg)
    if cfg.deterministic:
      tf.config.experimental.enable_op_determinism()
    # Before any other TensorFlow op: splitting the CPU into logical devices must come first.
    strategy = make_strategy(cfg)
    metrics = train.run(cfg, strategy)
  except errors.GanDistError as e:
    return _fail(e, e.exit_code, verbose)
  except data.DataError as e:  # The data layer's bad-input errors.
    return _fail(e, errors.EXIT_USAGE, verbose)
  except tf.errors.OpError as e:
    # An undecodable image met mid-run with --noskip_bad_images fails inside the input pipeline; it is bad input
    # (exit 2), named in one line. What was saved before it is kept: the same command resumes once it is fixed.
    line = next((l for l in str(e.message).splitlines() if data.BAD_IMAGE_ERROR in l), None)
    if line is None:
      raise
    return _fail(errors.UserError(line[line.index(data.BAD_IMAGE_ERROR):].strip().rstrip("]").strip()),
                 errors.EXIT_USAGE, verbose)
  logging.info("Done at step %d", metrics.get("step", -1))
  return errors.EXIT_OK


def main(argv):
  del argv  # parse_flags refused positional arguments.
  return run_cli(gan_flags.config_from_flags(), verbose=FLAGS["verbosity"].value >= 1)


def run():
  logging.set_verbosity(logging.INFO)
  # tf.distribute logs every collective at INFO; keep the run's own log readable.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel("WARNING")
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
