"""Tiny trained workdirs for the sample, export and serve tests: trained once per test session, shared by the modules
and by the test processes of `pytest -n` (the first to need one trains it under a file lock; the others wait, then
read it).

`unconditional`: mlp in float32 without EMA; `conditional`: cgan_mlp (10 classes) in mixed_float16 with an EMA
generator (so exports must pick the EMA weights and convert them to float32). Both with a 16-dimensional latent.
"""

import fcntl
import os
import shutil

import tensorflow as tf

from gan_dist import train
from gan_dist import workdir as workdir_lib
from tests import helpers

LATENT_DIM = 16
KINDS = {
    "unconditional": dict(arch="mlp", latent_dim=LATENT_DIM),
    "conditional": dict(arch="cgan_mlp", latent_dim=LATENT_DIM, precision="mixed_float16", ema_decay=0.9),
}
_TRAINED = {}


def _shared_root(tmp_path_factory):
  """The session's temporary root: under pytest-xdist, the parent of every test process's own base directory."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def trained(kind: str, tmp_path_factory) -> str:
  """The workdir of a 1-step run of `KINDS[kind]` on random IDX data (one device)."""
  if kind not in _TRAINED:
    base = _shared_root(tmp_path_factory) / f"trained_{kind}"
    workdir = base / "workdir"
    with open(str(base) + ".lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if training fails.
      if not (base / "done").exists():
        base.mkdir(exist_ok=True)
        data_dir = helpers.make_idx_dir(str(base / "idx"), num=32)
        cfg = helpers.config(base, data_dir=data_dir, strategy="one_device", train_steps=1, **KINDS[kind])
        train.run(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"))
        assert cfg.workdir == str(workdir)
        (base / "done").write_text("")
    _TRAINED[kind] = str(workdir)
  return _TRAINED[kind]


def with_truncation(kind: str, tmp_path_factory, truncation: float, dest) -> str:
  """A copy of `trained(kind)` at `dest` as a run with --truncation=`truncation` leaves it: the truncation is how the
  run samples, not a weight, so its flags.txt is all that differs."""
  shutil.copytree(trained(kind, tmp_path_factory), dest)
  cfg = workdir_lib.read_run_config(str(dest), truncation=truncation)
  workdir_lib.write_config(cfg, workdir_lib.flags_path(str(dest)))
  return str(dest)
