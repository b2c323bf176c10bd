"""Tiny trained workdirs for the sample, export and serve tests: trained once per test process, shared by the modules.

`unconditional`: mlp in float32 without EMA; `conditional`: cgan_mlp (10 classes) in mixed_float16 with an EMA
generator (so exports must pick the EMA weights and convert them to float32). Both with a 16-dimensional latent.
"""

import tensorflow as tf

from gan_dist import train
from tests import helpers

LATENT_DIM = 16
KINDS = {
    "unconditional": dict(arch="mlp", latent_dim=LATENT_DIM),
    "conditional": dict(arch="cgan_mlp", latent_dim=LATENT_DIM, precision="mixed_float16", ema_decay=0.9),
}
_TRAINED = {}


def trained(kind: str, tmp_path_factory) -> str:
  """The workdir of a 1-step run of `KINDS[kind]` on random IDX data (one device)."""
  if kind not in _TRAINED:
    base = tmp_path_factory.mktemp(f"trained_{kind}")
    data_dir = helpers.make_idx_dir(str(base / "idx"), num=32)
    cfg = helpers.config(base, data_dir=data_dir, strategy="one_device", train_steps=1, **KINDS[kind])
    train.run(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"))
    _TRAINED[kind] = cfg.workdir
  return _TRAINED[kind]
