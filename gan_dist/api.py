"""The Python API, for notebooks and scripts: the command line's own three steps in a few lines.

  from gan_dist import api
  cfg = api.config(arch="mlp", data_dir="../shared/data/mnist", workdir="/tmp/nb", train_steps=200)
  api.fit(cfg)                                   # trains (or resumes) exactly as python -m gan_dist.main does
  images = api.sample("/tmp/nb", 16)             # uint8 [16, 28, 28, 1] from the latest checkpoint

`config` takes the same fields, defaults and rules as the flags (config.py); `fit` runs the same checks and
trainer as the command line (which calls it) and raises gan_dist's errors instead of exiting; `load` opens a
trained workdir (an `inference.Run`: its `generator`, `step`, `cfg` and `sample`).
"""

from typing import Callable, Optional, Union

import numpy as np
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import inference
from gan_dist import preflight
from gan_dist import sampling
from gan_dist import strategy as strategy_lib
from gan_dist import train


def config(flagfile: str = "", **values) -> config_lib.Config:
  """A validated Config: the fields of a flagfile (e.g. "configs/dcgan.cfg"), if given, then `values`.

  Raises:
    errors.UserError: an unknown field or a value the flag would refuse.
  """
  if not flagfile:
    return config_lib.make_config(**values)
  return config_lib.from_args([f"--flagfile={flagfile}"], **values)


def fit(cfg: config_lib.Config, make_strategy: Callable[[config_lib.Config], tf.distribute.Strategy] =
        strategy_lib.make) -> dict:
  """Trains `cfg` to --train_steps (resuming its workdir if it holds a checkpoint); returns the last logged metrics.

  The strategy is made from `cfg` (--strategy); in a notebook where TensorFlow already placed ops, splitting the
  CPU into replicas (--num_cpu_replicas > 1) is no longer possible: use one_device, or a fresh kernel.

  Raises:
    errors.GanDistError: gan_dist's own outcomes (bad input, divergence, a damaged checkpoint, preemption ...),
      each with its message and exit code.
  """
  preflight.check_config(cfg)
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy = make_strategy(cfg)  # Before any other TensorFlow op of the run.
  return train.run(cfg, strategy)


def load(workdir: str, step: Optional[int] = None, best: bool = False) -> inference.Run:
  """A trained workdir's latest (step-`step`, or with `best` the best) checkpoint, ready to sample:
  `run.sample(num, seed)`.

  `best`: the best checkpoint that training with --eval_every kept (what --best opens in the tools).

  Raises:
    errors.UserError: not a workdir, no such checkpoint, or both `step` and `best`.
  """
  return inference.load(workdir, step, best)


def sample(workdir: str, num: int, seed: int = 0, label: Union[int, str, None] = None, step: Optional[int] = None,
           best: bool = False) -> np.ndarray:
  """uint8 images [num, H, W, C] of a trained workdir's checkpoint (as `load` picks it; class `label` for
  conditional models, by id or by the name the run recorded: `Run.class_id`; image i is the same for any num):
  what `python -m gan_dist.sample` writes."""
  return sampling.to_uint8(load(workdir, step, best).sample(num, seed, label)).numpy()
