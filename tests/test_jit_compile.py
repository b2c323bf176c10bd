"""--jit_compile trains (its refusals are in test_precision.py): XLA compiles the per-replica step, the losses stay
finite and the step advances, on one device and on 2 CPU replicas with --nosync_batchnorm (the multi-replica CPU
combination train_step.check_jit_supported allows).

In this process: a tf.function made with jit_compile=True must compile (TensorFlow raises otherwise), so a spy on
tf.function that sees the step's functions made that way and then traced into the train loop (their tracing counts:
made but never called, they would compile nothing), and a run that completes, show XLA trained.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import train
from gan_dist import train_step
from tests import helpers


@pytest.mark.slow
def test_jit_compile_trains_on_one_device_and_on_two_replicas_without_sync_batchnorm(tmp_path, one_device, mirrored2,
                                                                                     monkeypatch):
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  compiled = []  # (the Python function, the tf.function made of it for XLA)
  real_function = tf.function

  def spy(*args, **kwargs):
    function = real_function(*args, **kwargs)
    if kwargs.get("jit_compile"):
      compiled.append((getattr(args[0], "func", args[0]) if args else None, function))
    return function

  monkeypatch.setattr(tf, "function", spy)
  # One device takes 2 D updates per G update: the extra D step is the only caller of the compiled d_gradients.
  runs = {"one_device": (one_device, dict(strategy="one_device", d_steps_per_g=2)),
          # ADA's augmentation (and its replica-identical p) inside the compiled per-replica step, with one
          # geometric and one colour transform: each replica compiles its own step, and the whole policy's
          # resamplings doubled the time of this test (tests/test_augment.py compiles the whole policy once).
          "mirrored": (mirrored2, dict(strategy="mirrored", num_cpu_replicas=2, sync_batchnorm=False, augment="ada",
                                       augment_policy="flip,brightness"))}
  for name, (strategy, overrides) in runs.items():
    del compiled[:]
    cfg = helpers.config(tmp_path, workdir=str(tmp_path / name), arch="mlp", data_dir=data_dir, jit_compile=True,
                         batch_size=16, train_steps=4, steps_per_loop=2, summary_every=2, checkpoint_every=2,
                         **overrides)
    metrics = train.run(cfg, strategy)
    # The step's forward/backward functions (the tutorial step and the extra D step) were made for XLA, and the
    # train loop traced (so calls) those compiled functions, not the plain ones beside them.
    traced = {}
    for fn, function in compiled:
      traced[fn] = traced.get(fn, 0) + function.experimental_get_tracing_count()
    assert traced.get(train_step.gd_gradients, 0) > 0, (name, traced)
    if overrides.get("d_steps_per_g", 1) > 1:
      assert traced.get(train_step.d_gradients, 0) > 0, (name, traced)
    else:
      assert train_step.d_gradients in traced, (name, traced)  # Made, but a step with no extra D update skips it.
    assert metrics["step"] == 4 and math.isfinite(metrics["d_loss"]) and math.isfinite(metrics["g_loss"]), metrics
    reader = tf.train.load_checkpoint(str(tmp_path / name / "checkpoints" / "ckpt-4"))
    earlier = tf.train.load_checkpoint(str(tmp_path / name / "checkpoints" / "ckpt-2"))
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 4
    trainable = [n for n in reader.get_variable_to_shape_map() if "_trainable_variables/" in n]
    # Finite weights that moved between step 2 and step 4 in every trainable tensor of G and D.
    assert len(trainable) > 10
    for n in trainable:
      assert np.all(np.isfinite(reader.get_tensor(n))), (name, n)
      assert not np.array_equal(reader.get_tensor(n), earlier.get_tensor(n)), (name, n)
