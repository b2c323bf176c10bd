"""A small Keras CNN that classifies MNIST digits, to check that a conditional generator draws the class it is asked.

  model, test_accuracy = train(data_dir)      # about 99% test accuracy after 1 epoch
  predictions = classify(model, images)       # uint8 [N, 28, 28, 1] -> int32 [N]

Conv2D 32 (3x3, relu) -> MaxPool 2 -> Conv2D 64 (3x3, relu) -> MaxPool 2 -> Flatten -> Dense 128 (relu)
-> Dropout 0.5 -> Dense 10 logits. Trained with Adam(1e-3) on the IDX training split, evaluated on the test split.
"""

import os
from typing import Optional, Tuple

import keras
import numpy as np

from gan_dist import data

IMAGE_SHAPE = (28, 28, 1)


def build(num_classes: int = 10) -> keras.Model:
  """[B, 28, 28, 1] float32 in [0, 1] -> [B, num_classes] logits, always float32."""
  # A GAN run may have set a mixed-precision global policy (state.set_precision); the classifier must not inherit it.
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float32")
  try:
    model = keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(num_classes),
    ], name="mnist_classifier")
  finally:
    keras.config.set_dtype_policy(previous)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  return model


def _to_float(images: np.ndarray) -> np.ndarray:
  return np.asarray(images, np.float32) / 255.0


def train(data_dir: str, epochs: int = 1, batch_size: int = 128, seed: int = 0,
          max_examples: Optional[int] = None) -> Tuple[keras.Model, float]:
  """Trains the classifier on the IDX training split of `data_dir` and evaluates it on the test split.

  Args:
    data_dir: folder with the four MNIST IDX files.
    epochs: passes over the training split.
    batch_size: training batch size.
    seed: seed of the initial weights and the data order.
    max_examples: train and evaluate on at most this many examples of each split (quick tests).

  Returns:
    (model, test accuracy in [0, 1]).
  """
  keras.utils.set_random_seed(seed)
  train_split = data.load_idx(data_dir, "train")
  test_split = data.load_idx(data_dir, "test")
  n_train = max_examples or len(train_split.images)
  n_test = max_examples or len(test_split.images)
  model = build(max(train_split.num_classes, test_split.num_classes))
  model.fit(_to_float(train_split.images[:n_train]), train_split.labels[:n_train], batch_size=batch_size,
            epochs=epochs, shuffle=True, verbose=0)
  _, accuracy = model.evaluate(_to_float(test_split.images[:n_test]), test_split.labels[:n_test],
                               batch_size=1024, verbose=0)
  return model, float(accuracy)


def load_or_train(data_dir: str, path: str = "", epochs: int = 1) -> Tuple[keras.Model, Optional[float]]:
  """Loads a classifier saved at `path` (.keras), or trains one and saves it there when `path` is given.

  Returns:
    (model, test accuracy), the accuracy None when the model was loaded rather than trained.
  """
  if path and os.path.exists(path):
    return keras.models.load_model(path), None
  model, accuracy = train(data_dir, epochs=epochs)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
  return model, accuracy


def classify(model: keras.Model, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """uint8 [N, 28, 28, 1] images -> int32 [N] predicted classes."""
  logits = model.predict(_to_float(images), batch_size=batch_size, verbose=0)
  return np.argmax(logits, axis=-1).astype(np.int32)
