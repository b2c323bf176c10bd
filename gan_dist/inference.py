"""A trained workdir opened for inference, in one place: its Config, its models restored, the generator to use.

  run = inference.load("runs/quick")            # latest checkpoint; step=N for another
  run.cfg, run.state, run.step                  # the run's flags.txt, TrainState, restored step
  inference.load("runs/quick", best=True)       # the best checkpoint that training with --eval_every kept
  run.generator                                 # the EMA generator if the run kept one, its BatchNorm ready
  images = run.sample(64, seed=0)               # float32 [64, H, W, C] in [-1, 1]

Used by `gan_dist.sample`, `gan_dist.export`, `gan_dist.plots`, `gan_dist.evaluate`, the evaluation CLIs and the
web demo. Nothing is trained and nothing is written to the workdir.
"""

import dataclasses
import os
import re
from typing import List, Optional, Union

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import files
from gan_dist import sampling
from gan_dist import state as state_lib
from gan_dist import workdir as workdir_lib


@dataclasses.dataclass
class Run:
  """A restored run.

  Attributes:
    cfg: the run's Config (its flags.txt; `workdir` set to the path it was opened from).
    state: its TrainState, restored on the current (default) strategy.
    path: the checkpoint restored.
    best: it is the run's best checkpoint (checkpoints/best/).
  """

  cfg: config_lib.Config
  state: state_lib.TrainState
  path: str
  best: bool = False

  @property
  def gan(self):
    return self.state.gan

  @property
  def step(self) -> int:
    return int(self.state.step.numpy())

  @property
  def generator(self) -> keras.Model:
    """The generator that samples: the EMA copy when the run kept one (its BatchNorm statistics re-estimated)."""
    self.state.prepare_ema()
    return self.state.sampling_generator

  @property
  def class_names(self) -> List[str]:
    """The name of each of the data's classes in label order ("" where the data named none)."""
    return workdir_lib.read_class_names(self.cfg.workdir, self.cfg.num_classes)

  def describe(self) -> str:
    """E.g. "EMA generator, step 3000" ("..., step 3000, the best checkpoint" for the best one)."""
    best = ", the best checkpoint" if self.best else ""
    return f"{'EMA ' if self.state.ema_generator is not None else ''}generator, step {self.step}{best}"

  def generate_fn(self):
    """`sampling.make_generate_fn` of `generator`."""
    return sampling.make_generate_fn(self.generator, self.gan)

  def class_id(self, label: Union[int, str, None], flag: str = "label") -> Optional[int]:
    """`label` as a class id: one of the class names the run recorded (classes.json, e.g. a class folder's "cat"),
    or an integer or its digits (`sampling.labels` refuses one the model lacks); None stays None.

    A name comes first, as in the demo's class parameter: class folders named "1", "10", "2" are classes 0, 1, 2,
    and "10" means the folder the user named so (class 1), not class id 10.

    Raises:
      errors.UserError: a string that is neither (the message, which names it `flag`, lists the names).
    """
    if not isinstance(label, str):
      return label
    names = self.class_names
    named = sampling.class_named(label.strip(), names)
    if named is not None:
      return named
    if re.fullmatch(r"[+-]?\d+", label.strip()):
      return int(label)
    known = sampling.named_classes(names)
    raise errors.UserError(f"{flag}={label} is neither a class id nor a class name of this run"
                           f"{f': {known}' if known else ' (it recorded none: give the id, an integer)'}")

  def sample(self, num: int, seed: int, label: Union[int, str, None] = None) -> np.ndarray:
    """float32 images [num, H, W, C] in [-1, 1] of `sampling.inputs` (image i the same for any num; the run's
    --truncation); `label`: one class (`class_id`), None: cycling through the classes.

    Raises:
      errors.UserError: `num` images would not fit in the available memory (`sampling.check_memory`), or `label`
        is no class of the model.
    """
    sampling.check_memory(num, self.gan.image_shape, self.gan.latent_dim)
    z, y = sampling.inputs(num, self.gan.latent_dim, self.gan.num_classes, seed, self.class_id(label),
                           truncation=self.cfg.truncation)
    return sampling.generate(self.generate_fn(), z, y)


def load(workdir: str, step: Optional[int] = None, best: bool = False, **overrides) -> Run:
  """Opens `workdir` (its flags.txt and its latest checkpoint, that of `step`, or the best) on the current strategy.

  Args:
    workdir: a run directory (any TensorFlow filesystem).
    step: the checkpoint's step; None: the latest.
    best: the best checkpoint instead (checkpoints/best/, kept by training with --eval_every).
    **overrides: Config fields to replace (e.g. data_dir, eval_cache_dir for evaluation).

  Raises:
    errors.UserError: not a workdir, no such checkpoint, or a checkpoint that does not match flags.txt.
    errors.CorruptCheckpointError: the checkpoint cannot be read (the message names one that can).
  """
  cfg = workdir_lib.read_run_config(workdir, **overrides)
  if ("data_dir" not in overrides and cfg.data_dir and files.is_local(cfg.data_dir)
      and not os.path.isabs(cfg.data_dir) and not tf.io.gfile.exists(cfg.data_dir)):
    # Sampling and export do not need the data; evaluation and plots do, and would only say it does not exist.
    logging.warning("The run's --data_dir=%s (flags.txt) is relative to where it was trained and not found from "
                    "here; pass --data_dir to a tool that reads the data", cfg.data_dir)
  path = checkpoint_lib.inference_path(workdir, step, best)  # Before the models are built: a bad --step fails fast.
  state = state_lib.create_state(cfg, tf.distribute.get_strategy(), cfg.num_classes)
  restore(state, path)
  logging.info("Loaded %s (step %d)", path, int(state.step.numpy()))
  return Run(cfg, state, path, best)


def restore(state: state_lib.TrainState, path: str) -> None:
  """Restores the checkpoint at `path` into `state` for inference (`checkpoint.restore_for_inference`)."""
  checkpoint_lib.restore_for_inference(checkpoint_lib.make_checkpoint(state), path)
  state.ema_restored()  # Every checkpoint holds the EMA generator's statistics for its weights.


def float32_copy(generator: keras.Model) -> keras.Model:
  """A float32 copy of `generator` (same weights, inference mode) made of Keras' own layer classes only.

  gan_dist's layer subclasses (e.g. the replica-aware Dropout) become their Keras base class, which behaves the same
  in inference, so a saved copy loads where gan_dist is not installed. Mixed-precision layers compute in float32
  (the variables already are float32), and BatchNorm is not synchronised (that matters only in training). The
  layers of the ResNet recipe become Keras layers computing what they compute in inference (their `export_call`):
  a SpectralNormalization its wrapped layer with W / sigma (from the stored u) as kernel, a SelfAttention and a
  ConditionalBatchNorm a small graph of Conv2D/Dense, Dot, Softmax, BatchNormalization, Rescaling, Multiply, Add,
  a FanOut nothing (its input goes to every reader). A layer class of a custom architecture (--arch=my_module)
  stays its own class, in float32: its Keras base class would compute something else, silently, or nothing (a
  SavedModel then still loads without that code; a Keras file needs it: `keras_file_needs`).

  Args:
    generator: a functional or Sequential generator (float32 or mixed precision).

  Returns:
    The float32 copy, with the same inputs and outputs ([B, H, W, C] images); Keras' own layer classes only for
    gan_dist's architectures.

  Raises:
    errors.UserError: a custom architecture's layer that its class cannot rebuild from its get_config().
  """
  copies = []  # (original layer, its copy) of the layers cloned one to one, whose weights are copied after.

  def clone(layer):
    if hasattr(layer, "export_call"):
      return layer  # Replaced by the Keras layers of its export_call (see `call`).
    copy_class = _copy_class(type(layer))
    try:
      layer_config = layer.get_config()
      layer_config["dtype"] = "float32"
      if "synchronized" in layer_config:
        layer_config["synchronized"] = False
      if issubclass(copy_class, keras.layers.Lambda):
        # Its function is this process's own code (the architecture's), not read from a file: nothing to refuse.
        copy = copy_class.from_config(layer_config, safe_mode=False)
      else:
        copy = copy_class.from_config(layer_config)
    except (TypeError, ValueError, KeyError, NotImplementedError) as e:
      name = copy_class.__name__
      raise errors.UserError(
          f"the generator's layer {layer.name!r} ({name} of {copy_class.__module__}) cannot be copied for export: "
          f"{name}.from_config(its get_config()) failed ({type(e).__name__}: {' '.join(str(e).split())}); give "
          f"{name} a get_config() that returns its __init__ arguments (Keras' rule for custom layers)") from None
    copies.append((layer, copy))
    return copy

  def call(layer, *args, **kwargs):
    if hasattr(layer, "export_call"):
      return layer.export_call(*args, **kwargs)
    return layer(*args, **kwargs)

  if isinstance(generator, keras.Sequential):
    # A custom architecture's Sequential generator: Keras clones those without call_function; its functional view
    # (the same layers and weights) clones as any functional generator.
    generator = keras.Model(generator.inputs, generator.outputs, name=generator.name)
  copy = keras.models.clone_model(generator, clone_function=clone, call_function=call)
  for layer, layer_copy in copies:
    layer_copy.set_weights(layer.get_weights())
  return copy


def _copy_class(layer_class: type) -> type:
  """The class of a layer's float32 copy: a gan_dist subclass of a Keras layer (e.g. the replica-aware Dropout) its
  Keras base class, which behaves the same in inference and needs no gan_dist to load; any other class itself:
  Keras' own, a custom architecture's, a gan_dist layer whose only Keras base is the abstract Layer."""
  if layer_class.__module__.split(".")[0] != "gan_dist":
    return layer_class
  base = next(c for c in layer_class.__mro__ if c.__module__.split(".")[0] == "keras")
  return layer_class if base is keras.layers.Layer else base


def keras_file_needs(model: keras.Model) -> List[str]:
  """What `keras.saving.load_model` needs besides Keras to load `model` (e.g. a `float32_copy`) from a Keras file.

  Returns:
    One entry per layer class that is not Keras' own ("PixelNorm (my_gans.layers)": a custom architecture's; pass
    it in `custom_objects`, or import its module when the class is registered serializable), then one for Lambda
    layers (their Python function: load with safe_mode=False); empty for gan_dist's architectures.
  """
  needs, lambdas = [], []

  def visit(layers):
    for layer in layers:
      layer_class = type(layer)
      need = f"{layer_class.__name__} ({layer_class.__module__})"
      if layer_class.__module__.split(".")[0] != "keras" and need not in needs:
        needs.append(need)
      if isinstance(layer, keras.layers.Lambda):
        lambdas.append(layer)
      if isinstance(layer, keras.Model):  # A nested model: its own layers too.
        visit(layer.layers)

  visit(model.layers)
  return needs + (["a Lambda layer's Python function (load with safe_mode=False)"] if lambdas else [])


def facts(run: Run) -> dict:
  """What a person or a program wants to know about an exported or served generator (JSON-serialisable)."""
  cfg, gan = run.cfg, run.gan
  found = dict(arch=cfg.arch, dataset=cfg.dataset, step=run.step, ema=run.state.ema_generator is not None,
               ema_decay=cfg.ema_decay, image_shape=[int(d) for d in gan.image_shape], conditional=gan.conditional,
               num_classes=int(gan.num_classes) if gan.conditional else 0, latent_dim=int(gan.latent_dim),
               train_precision=cfg.precision,  # The export itself is always float32.
               truncation=cfg.truncation)  # How the run samples (0: no truncation); the demo's default.
  if gan.conditional or cfg.class_filter >= 0:  # Label k's name (its class folder, ...), "" where the data named none.
    found["class_names"] = run.class_names
  if cfg.class_filter >= 0:
    found["class_filter"] = cfg.class_filter
  if run.best:  # The run's best checkpoint (--best), not its latest or a --step.
    found["best_checkpoint"] = True
  return found
