"""The MNIST classifier and the class-accuracy evaluation, on a tiny random IDX fixture."""

import numpy as np

from gan_dist import models
from gan_dist import sample as sample_lib
from gan_dist.eval import class_accuracy
from gan_dist.eval import classifier
from tests import helpers


def test_train_classify_save_and_load(tmp_path):
  data_dir = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  model, accuracy = classifier.train(data_dir, epochs=1, batch_size=32, max_examples=64)
  assert 0.0 <= accuracy <= 1.0
  images = np.random.RandomState(0).randint(0, 256, size=(5, 28, 28, 1)).astype(np.uint8)
  predicted = classifier.classify(model, images)
  assert predicted.shape == (5,) and predicted.dtype == np.int32 and ((0 <= predicted) & (predicted < 10)).all()
  path = str(tmp_path / "classifier.keras")
  model.save(path)
  loaded, loaded_accuracy = classifier.load_or_train(data_dir, path)
  assert loaded_accuracy is None
  np.testing.assert_array_equal(classifier.classify(loaded, images), predicted)


def test_per_class_accuracy_of_an_untrained_cgan():
  model = classifier.build()  # Untrained: only the bookkeeping is under test.
  gan = models.build(helpers.config_values(arch="cgan_mlp"), 10)
  generate_fn = sample_lib.make_generate_fn(gan.generator, gan)
  accuracy = class_accuracy.per_class_accuracy(model, generate_fn, gan, num_per_class=3, seed=0)
  assert accuracy.shape == (10,) and ((0.0 <= accuracy) & (accuracy <= 1.0)).all()
  assert np.allclose(accuracy * 3, np.round(accuracy * 3))  # Fractions of 3 samples.
