"""Entry point: python -m gan_dist.main --strategy=mirrored --flagfile=configs/dcgan.cfg [--flag=value ...]

`--helpfull` lists every flag (the Config table in gan_dist/config.py). The exit codes are listed in
gan_dist/errors.py and in README "When things go wrong": gan_dist's own outcomes (bad input, divergence, a damaged
checkpoint, a failed peer, preemption) end with one line `error: ...` (the traceback too with --verbosity=1);
anything else is a bug or an environment problem and keeps its full traceback.
"""

from absl import logging
import tensorflow as tf

from gan_dist import api
from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import errors
from gan_dist import strategy as strategy_lib


def run_cli(cfg: config_lib.Config, make_strategy=strategy_lib.make, verbose: bool = False) -> int:
  """Runs a training job for `cfg`; returns the process exit code (see errors.py). Used by `main` and tests."""
  try:
    metrics = api.fit(cfg, make_strategy)
  except errors.GanDistError as e:
    return cli.fail(e, e.exit_code, verbose)
  except tf.errors.OpError as e:
    # An undecodable image met mid-run with --noskip_bad_images fails inside the input pipeline; it is bad input
    # (exit 2), named in one line. What was saved before it is kept: the same command resumes once it is fixed.
    line = data.bad_image_message(e)
    if line is None:
      raise
    return cli.fail(line, errors.EXIT_USAGE, verbose)
  logging.info("Done at step %d", metrics.get("step", -1))
  return errors.EXIT_OK


def main(argv):
  del argv  # cli.parse_flags refused positional arguments.
  return run_cli(cli.config_from_flags(), verbose=cli.verbose())


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
