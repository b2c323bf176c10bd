"""Export: a workdir's generator as a standalone SavedModel."""

import numpy as np
import tensorflow as tf

from gan_dist import export
from gan_dist import sample as sample_lib
from gan_dist import train
from tests import helpers


def test_export_matches_sampling(tmp_path, mirrored2):
  d = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  cfg = helpers.config(tmp_path, data_dir=d, train_steps=1)
  train.run(cfg, mirrored2)
  path = export.export(cfg.workdir, str(tmp_path / "saved"))
  serve = tf.saved_model.load(path).signatures["serving_default"]
  noise = np.random.RandomState(0).standard_normal((3, 100)).astype(np.float32)
  images = serve(noise=tf.constant(noise))["images"].numpy()
  assert images.shape == (3, 28, 28, 1) and images.dtype == np.uint8
  _, state = sample_lib.load_workdir(cfg.workdir)
  expected = sample_lib.generate(sample_lib.make_generate_fn(state.sampling_generator, state.gan), state.gan,
                                 noise, None)
  np.testing.assert_allclose(images.astype(int), np.round((expected + 1) * 127.5).astype(int), atol=1)
