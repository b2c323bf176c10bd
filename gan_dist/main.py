"""Entry point: python -m gan_dist.main --strategy=mirrored --flagfile=configs/dcgan.cfg [--flag=value ...]

`--helpfull` lists every flag (defined in gan_dist/flags.py).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import logging

from gan_dist import data
from gan_dist import flags as gan_flags
from gan_dist import strategy as strategy_lib
from gan_dist import train


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cfg = gan_flags.config_from_flags()
  try:
    # First: splitting the CPU into logical devices must precede every other TensorFlow op.
    strategy = strategy_lib.make(cfg)
    metrics = train.run(cfg, strategy)
  except (data.DataError, ValueError, FileNotFoundError) as e:
    # Configuration and data problems are the user's to fix: one clear message, no traceback.
    logging.error("%s", e)
    sys.exit(f"error: {e}")
  logging.info("Done at step %d", metrics.get("step", -1))


def run():
  logging.set_verbosity(logging.INFO)
  # tf.distribute logs every collective at INFO; keep the run's own log readable.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel("WARNING")
  app.run(main)


if __name__ == "__main__":
  run()
