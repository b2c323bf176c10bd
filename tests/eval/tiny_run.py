"""A tiny trained workdir for the tests of the tools that read one (evaluate, class_accuracy)."""

from gan_dist import train
from tests import helpers


_RUNS = {}


def shared_run(tmp_path_factory, strategy):
  """`train_tiny` once per test process: the tool tests only read the workdir (each writes its own outputs)."""
  if "cgan_mlp" not in _RUNS:
    _RUNS["cgan_mlp"] = train_tiny(tmp_path_factory.mktemp("tiny_run"), strategy)
  return _RUNS["cgan_mlp"]


def train_tiny(directory, strategy, arch: str = "cgan_mlp"):
  """Trains `arch` 4 steps on a 64-image IDX fixture with checkpoints and sample grids at steps 2 and 4.

  Returns:
    The run's Config (workdir, data_dir, eval_cache_dir under `directory`; eval_num 20).
  """
  cfg = helpers.config(directory, arch=arch, data_dir=helpers.make_idx_dir(str(directory / "idx"), num=64),
                       train_steps=4, sample_every=2, checkpoint_every=2, max_to_keep=5, num_samples=20,
                       eval_cache_dir=str(directory / "cache"), eval_num=20)
  train.run(cfg, strategy)
  return cfg
