"""Inception-v3 features for FID and IS, from a weights file the user supplies (nothing is downloaded).

  --inception_weights=PATH   Keras weights of keras.applications.InceptionV3 with its 1000-class top: the legacy
                             `inception_v3_weights_tf_dim_ordering_tf_kernels.h5` that Keras distributes, or a
                             `.weights.h5` written by `model.save_weights`. Any TensorFlow filesystem (copied to a
                             local temporary file first: Keras reads HDF5 from local paths only).

Images [B, H, W, C] in [-1, 1] (the range InceptionV3's own preprocessing produces) are resized to 299x299
(bilinear) and gray images repeated to 3 channels. Features: the 2048-d global average pool ("pool3"); logits: the
1000-class layer before its softmax. Published FIDs mostly use the TF 2015-12-05 Inception graph; Keras' ImageNet
weights give close but not identical numbers, so compare FIDs computed with the same weights file.
"""

import hashlib
import os
import tempfile

import keras
import tensorflow as tf

from gan_dist import errors

INPUT_SIDE = 299
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _local_copy(path: str) -> str:
  if "://" not in path:
    return path
  suffix = ".weights.h5" if path.endswith(".weights.h5") else os.path.splitext(path)[1]
  handle, local = tempfile.mkstemp(suffix=suffix)
  os.close(handle)
  tf.io.gfile.copy(path, local, overwrite=True)
  return local


def check_weights(path: str) -> None:
  """Refuses, in one line and before any work, a weights file that is not there or is not HDF5.

  Raises:
    errors.UserError: the reason.
  """
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f"--inception_weights={path} does not exist; pass a local copy of Keras' "
                           "InceptionV3 weights (inception_v3_weights_tf_dim_ordering_tf_kernels.h5)")
  with tf.io.gfile.GFile(path, "rb") as f:
    signature = f.read(8)
  if signature != _HDF5_SIGNATURE:
    raise errors.UserError(f"--inception_weights={path} is not a Keras InceptionV3 weights file (an HDF5 "
                           ".h5 or .weights.h5 file)")


def weights_checksum(path: str) -> str:
  """16 hex digits of the sha256 of the weights file (the cache key of real-data features).

  Raises:
    errors.UserError: see `check_weights`.
  """
  check_weights(path)
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while True:
      block = f.read(1 << 22)
      if not block:
        break
      digest.update(block)
  return digest.hexdigest()[:16]


def build(weights_path: str, image_shape) -> keras.Model:
  """images float32 [B, H, W, C] in [-1, 1] -> (pool3 features [B, 2048], logits [B, 1000]), always float32, in
  inference mode whatever `training` a call passes.

  Raises:
    errors.UserError: no file at `weights_path`, or it does not hold InceptionV3 weights with the 1000-class top.
  """
  check_weights(weights_path)  # Before building the network, which takes seconds.
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float32")
  try:
    base = keras.applications.InceptionV3(include_top=True, weights=None, classifier_activation=None)
    local = _local_copy(weights_path)
    try:
      base.load_weights(local)
    except Exception as e:  # pylint: disable=broad-except  (h5py and Keras raise many types for a wrong file)
      raise errors.UserError(f"--inception_weights={weights_path} is not a Keras InceptionV3 weights file with the "
                             f"1000-class top ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    finally:
      if local != weights_path:
        os.remove(local)
    trunk = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output], name="inception_v3")
    images = keras.Input(tuple(image_shape), name="images")
    x = images
    if image_shape[-1] == 1:
      x = keras.layers.Concatenate()([x, x, x])
    x = keras.layers.Resizing(INPUT_SIDE, INPUT_SIDE, interpolation="bilinear")(x)
    # Always inference mode: called without training=False (model(x), fit), the nested network ran its BatchNorms
    # on the batch's statistics and moved their moving averages for good.
    features, logits = trunk(x, training=False)
    return keras.Model(images, [features, logits], name="inception_features")
  finally:
    keras.config.set_dtype_policy(previous)
