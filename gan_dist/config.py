"""The training configuration in one table: every field once, with its default, help text and bounds.

`Config` is a frozen dataclass whose fields are the flags of `python -m gan_dist.main` (same names). The command
line (`define_flags` on an absl FlagValues, then `from_flag_values`), a workdir's `flags.txt` (`to_flagfile` /
`from_flagfile`) and code (`make_config(arch="mlp", ...)`) all build it from this table and are validated by the
same rules (`validate`). No TensorFlow here: the config is read by tools and tests that must start fast.

Adding a field: one `_field(...)` line in `Config`. If it changes the variables of a checkpoint, add it to
CHECKPOINT_SHAPING_FIELDS; if it changes which examples a step reads, to DATA_POSITION_FIELDS.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from absl import flags
from absl import logging

from gan_dist import errors

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# The one list of loss names: `losses.py` defines a function of each name.
LOSSES = ("non_saturating", "minimax", "least_squares", "hinge", "wasserstein")
# Largest seed NumPy's RandomState takes (seeds are in [0, 2^32)): --seed's bound and that of every sampling seed.
MAX_SEED = 2 ** 32 - 1
# Augmentation of D's inputs (`augment.py`): the modes, and the one list of transform names (a function each there).
AUGMENT_MODES = ("none", "diffaug", "ada")
AUGMENT_TRANSFORMS = ("brightness", "saturation", "contrast", "translation", "cutout", "flip", "rot90",
                      "int_translation", "scale", "aniso", "hue")
# Names that stand for several transforms in --augment_policy.
AUGMENT_GROUPS = {"color": ("brightness", "saturation", "contrast")}
# The policy of each mode when --augment_policy is empty: DiffAugment's "color,translation,cutout" (Zhao et al.
# 2020), and ADA's "bgc" pipeline (Karras et al. 2020) without arbitrary rotation and fractional translation.
DEFAULT_AUGMENT_POLICY = {"diffaug": "color,translation,cutout",
                          "ada": "flip,rot90,int_translation,scale,aniso,brightness,contrast,hue,saturation"}


def _field(default, help_text: str, *, lower=None, upper=None, choices: Optional[Sequence] = None,
           check: Optional[Tuple[Callable[[Any], bool], str]] = None):
  """A Config field: its default, help text and what values it takes.

  Args:
    default: the default value (its type is the field's).
    help_text: the flag's help.
    lower, upper: inclusive bounds of a number.
    choices: the values a string (an enum flag) or an integer may take.
    check: (predicate, message) for rules bounds cannot say, e.g. a half-open interval.
  """
  return dataclasses.field(default=default, metadata=dict(help=help_text, lower=lower, upper=upper,
                                                          choices=tuple(choices) if choices else None, check=check))


@dataclasses.dataclass(frozen=True)
class Config:
  """The resolved configuration of one run. Field names are flag names; `Config()` holds the defaults."""

  # Run and infrastructure.
  workdir: str = _field("/tmp/gan_dist", "Run directory: flags.txt, checkpoints/, tensorboard/, samples/. A workdir "
                        "holding a checkpoint is resumed from it.")
  strategy: str = _field("mirrored", "tf.distribute strategy: one_device (one GPU or the CPU), mirrored (all local "
                         "GPUs, or --num_cpu_replicas logical CPUs), multi_worker_mirrored (several processes or "
                         "machines; cluster from TF_CONFIG, Slurm or --worker_hosts).", choices=STRATEGIES)
  num_cpu_replicas: int = _field(1, "On a host without GPUs, split the CPU into this many logical devices so that "
                                 "--strategy=mirrored runs this many replicas (testing distribution without a GPU; "
                                 "mirrored only).", lower=1)
  cluster: str = _field("tf_config", "Where multi_worker_mirrored finds its cluster: the TF_CONFIG variable, Slurm's "
                        "environment, or --worker_hosts with --task_index.", choices=("tf_config", "slurm", "hosts"))
  worker_hosts: str = _field("", "Comma-separated host:port of every worker (with --cluster=hosts).")
  task_index: int = _field(0, "Index of this worker in --worker_hosts (with --cluster=hosts).", lower=0)
  communication: str = _field("auto", "Collective implementation of multi_worker_mirrored (nccl needs GPUs).",
                              choices=("auto", "ring", "nccl"))
  peer_timeout_s: int = _field(30, "multi_worker_mirrored: a worker that sends no heartbeat for this many seconds "
                               "(dead, frozen or unreachable) fails the run on every other worker, which then exits "
                               "with code 5 instead of waiting forever; collectives stuck this long fail too.",
                               lower=5)
  cluster_start_timeout_s: int = _field(900, "multi_worker_mirrored: how long the workers wait for each other to "
                                        "start before failing (a worker that never comes up must not hang the "
                                        "rest).", lower=10)
  seed: int = _field(0, "Seed of the data order, the initial weights, the noise and the fixed sample noise.",
                     lower=0, upper=MAX_SEED)
  deterministic: bool = _field(False, "Op determinism (tf.config.experimental.enable_op_determinism): with the noise "
                               "and data order already functions of (seed, step), a run interrupted and resumed any "
                               "number of times ends with the same weights as an uninterrupted one. Slower on GPUs.")
  resume_step: int = _field(-1, "Resume from the checkpoint of this step instead of the latest one (e.g. when the "
                            "latest is damaged; the error message names the newest one that restores). -1: the "
                            "latest.", lower=-1)
  allow_data_position_change: bool = _field(False, "Allow resuming a workdir with another --batch_size, "
                                            "--d_steps_per_g, --dataset, --split, --class_filter, --seed or "
                                            "--shuffle_files. They decide "
                                            "which examples a step reads, so a resumed run would not continue the "
                                            "data order where it stopped (or would train on other data); refused "
                                            "unless this flag says the change is meant (e.g. fine-tuning).")
  profile_steps: str = _field("", "FIRST,LAST: write a TensorBoard profiler trace of these train steps to "
                              "<workdir>/tensorboard (chief only), e.g. 100,110. Empty: no profiling.")
  # Data.
  dataset: str = _field("mnist", "Image dataset: 'folder' (the image files below --data_dir, class subfolders as "
                        "labels; a pack of python -m gan_dist.pack is recognised), 'packed' (such a pack) or a "
                        "TensorFlow Datasets name (mnist, fashion_mnist, cifar10, celeb_a, ...), read by "
                        "random access from --data_dir.")
  data_dir: str = _field("", "The folder of images (--dataset=folder), a TFDS data dir, or, for mnist and "
                         "fashion_mnist, a folder holding their four IDX .gz files (read directly, offline). Empty: "
                         "TFDS's default data dir. Any TensorFlow filesystem (gs://...).")
  split: str = _field("train", "Dataset split to train on.")
  class_filter: int = _field(-1, "Train on this class only (e.g. 5 for the digit 5); -1 keeps all.", lower=-1)
  num_classes: int = _field(0, "Number of label classes for conditional models; 0 takes it from the dataset (the "
                            "resolved value is written to flags.txt).", lower=0)
  shuffle_files: bool = _field(True, "Reshuffle the examples every epoch (order is a function of --seed and the step, "
                               "so a resumed run sees the same batches).")
  image_size: int = _field(0, "Height and width of the images the model makes and trains on (every source is "
                           "cropped per --crop and resized to it); 0: the architecture's native size (28 for the "
                           "MNIST models, 32 for dcgan32 and resnet, 64 for dcgan64). An architecture refuses a size "
                           "it cannot make.", lower=0)
  channels: int = _field(0, "Image channels: 1 (grayscale) or 3 (RGB); every source is converted (gray, gray+alpha, "
                         "RGB, RGBA, palette, 16-bit). 0: the architecture's native channels.", choices=(0, 1, 3))
  crop: str = _field("center", "Before resizing to --image_size: center (cut the largest centred square, keeping the "
                     "aspect ratio) or none (stretch the whole image).", choices=("center", "none"))
  random_flip: bool = _field(False, "Flip each training image horizontally with probability 1/2, drawn from (--seed, "
                             "step, position in the batch), so a resumed run flips the same images.")
  skip_bad_images: bool = _field(True, "An image file that cannot be decoded (corrupt, empty, not an image) is "
                                 "logged, counted and replaced by a deterministic substitute example; "
                                 "--noskip_bad_images stops the run at the first one instead.")
  data_cache_dir: str = _field("", "Where one-time data conversions are written: a TFDS dataset prepared as "
                               "TFRecord (sequential only) is converted once to ArrayRecord (random access) under "
                               "DIR/<name>/<config>/<version>. Empty: <TFDS data dir>/gan_dist_array_record. Never the "
                               "workdir. Also where the shards of a remote --dataset=packed are copied (when DIR is "
                               "local; else the temporary directory).")
  # Model.
  arch: str = _field("dcgan", "Architecture: a module name under gan_dist/models/, or the dotted path of a module "
                     "of your own defining build(cfg, num_classes) -> gan_dist.models.Gan (importable from the "
                     "working directory or PYTHONPATH; see examples/custom_arch).")
  latent_dim: int = _field(100, "Size of the generator's noise vector.", lower=1)
  g_channels: int = _field(32, "Base width ch of the ResNet generators (resnet, cresnet): their blocks have ch*8, "
                           "ch*4, ch*2, ch channels going up to the image size.", lower=1)
  d_channels: int = _field(32, "Base width ch of the ResNet discriminators (resnet, cresnet): their blocks have ch, "
                           "ch*2, ch*4, ... channels going down to 4x4.", lower=1)
  attention_resolution: int = _field(0, "ResNet architectures: a self-attention block in G and D at this resolution "
                                     "(8, 16, ..., image size / 2); 0: none.", lower=0)
  g_conditioning: str = _field("embedding", "cresnet's generator, what its conditional BatchNorms read: "
                               "`embedding`, the shared class embedding e (BigGAN); `noise_and_embedding`, [z, e], "
                               "also the input of its first layer (BigGAN-deep), so that the class shapes the 4x4 "
                               "start and the noise reaches every block.",
                               choices=("embedding", "noise_and_embedding"))
  sync_batchnorm: bool = _field(True, "BatchNormalization uses statistics of the global batch (all replicas) and "
                                "keeps identical moving statistics on every replica.")
  # Objective and optimisation.
  loss: str = _field("non_saturating", "GAN loss (per example, from logits).", choices=LOSSES)
  gp_weight: float = _field(0.0, "Weight of the WGAN-GP gradient penalty (on interpolates of real and fake).",
                            lower=0.0)
  r1_weight: float = _field(0.0, "Weight of the R1 penalty (squared gradient norm of D on real images).", lower=0.0)
  class_loss_weight: float = _field(0.0, "Conditional models with a class head (cresnet): weight of an auxiliary "
                                    "classifier on D's features (AC-GAN, Odena et al. 2017): D learns the class of "
                                    "real images, G to make images classified as the class asked. 0: off (the "
                                    "projection alone). Watch for collapse within a class (README 'Colour "
                                    "images').", lower=0.0)
  mode_seeking_weight: float = _field(0.0, "Weight of MSGAN's mode-seeking term in G's loss (Mao et al. 2019), "
                                      "against collapse within a class: the fake labels come in pairs (examples 2k "
                                      "and 2k+1 share one) and G is penalised by 1 / (mean|G(z1) - G(z2)| / "
                                      "mean|z1 - z2| + 1e-5) for each pair. Needs an even batch per replica. 0: "
                                      "off.", lower=0.0)
  augment: str = _field("none", "Augment every image D sees, real and generated, in D's and G's updates, with "
                        "differentiable transforms: diffaug (DiffAugment: every transform on every image) or ada "
                        "(adaptive: each transform with probability p, which rises while D is over-confident on "
                        "reals); see README 'Small folders'.", choices=AUGMENT_MODES)
  augment_policy: str = _field("", "Comma-separated transforms (" + ", ".join(AUGMENT_TRANSFORMS) + "; color = "
                               "brightness,saturation,contrast), applied in this order. Empty: diffaug "
                               f"{DEFAULT_AUGMENT_POLICY['diffaug']}; ada {DEFAULT_AUGMENT_POLICY['ada']}.")
  ada_target: float = _field(0.6, "ada: the target of r_t = E[sign(D(real))] (of D(real) - 1/2 under "
                             "--loss=least_squares, whose targets are 0 and 1), D's over-confidence on reals; p "
                             "rises while r_t is above it.", check=(lambda v: 0.0 < v < 1.0, "must be in (0, 1)"))
  ada_kimg: float = _field(20.0, "ada: thousands of real images over which p can move from 0 to 1 (ADA's speed: "
                           "a small folder is memorised within a few hundred steps, so p must be able to rise as "
                           "fast; the paper's 500 suits runs of millions of images).", check=(lambda v: v > 0,
                                                                                        "must be > 0"))
  d_steps_per_g: int = _field(1, "Discriminator updates per generator update; each takes a new batch.", lower=1)
  g_lr: float = _field(1e-4, "Generator Adam learning rate.", lower=0.0)
  d_lr: float = _field(1e-4, "Discriminator Adam learning rate.", lower=0.0)
  beta1: float = _field(0.9, "Adam beta_1 of both optimizers.", lower=0.0, upper=1.0)
  beta2: float = _field(0.999, "Adam beta_2 of both optimizers.", lower=0.0, upper=1.0)
  ema_decay: float = _field(0.0, "If > 0, keep an exponential moving average of G's weights with this decay (in "
                            "[0, 1); warmed up over the first steps); samples, evaluation and exports then use it.",
                            check=(lambda v: 0.0 <= v < 1.0, "must be in [0, 1): 0 disables the EMA, e.g. 0.999 "
                                   "averages about 1,000 steps"))
  batch_size: int = _field(256, "Global batch size, split evenly over all replicas of all workers.", lower=1)
  train_steps: int = _field(23400, "Total generator steps to reach; a resumed run stops there too.", lower=0)
  precision: str = _field("float32", "Compute precision. mixed_float16 wraps each optimizer in its own "
                          "LossScaleOptimizer; mixed_bfloat16 needs no loss scaling.", choices=PRECISIONS)
  jit_compile: bool = _field(False, "Compile the per-replica step with XLA where TensorFlow supports it.")
  # Loop, checkpoints and monitoring.
  steps_per_loop: int = _field(10, "Train steps run inside one tf.function call (fewer host round trips).", lower=1)
  checkpoint_every: int = _field(1000, "Save a checkpoint every this many steps (and at the end).", lower=1)
  max_to_keep: int = _field(5, "Checkpoints kept by the CheckpointManager.", lower=1)
  keep_checkpoint_every_n_hours: float = _field(0.0, "Also keep one checkpoint per this many hours (0 disables).",
                                                lower=0.0)
  summary_every: int = _field(100, "Write TensorBoard scalars and a log line every this many steps.", lower=1)
  sample_every: int = _field(1000, "Write a sample grid (TensorBoard image and PNG) every this many steps.", lower=1)
  num_samples: int = _field(100, "Images in a sample grid (conditional models: rounded to whole rows of classes).",
                            lower=1)
  # Evaluation.
  eval_every: int = _field(0, "Evaluate the (EMA) generator every this many steps: FCD, KID, classifier score, "
                           "precision/recall (and label accuracy when conditional) on --eval_num samples, to "
                           "TensorBoard and the log; the best checkpoint by FCD is kept in checkpoints/best/. 0: off.",
                           lower=0)
  eval_num: int = _field(10000, "Generated images per evaluation, and real images of each split for the reference "
                         "statistics and the real-data floor.", lower=4)
  truncation: float = _field(0.0, "Sample from noise truncated to [-T, T] (BigGAN's truncation trick: more typical "
                             "images, less variety; 0.5-1 is usual) in evaluations, sample grids, gan_dist.sample "
                             "and gan_dist.eval.class_accuracy. Training noise is never "
                             "truncated, so it may change between runs and evaluations of one workdir. Not every "
                             "generator is amenable to it (BigGAN trains with orthogonal regularisation for it); "
                             "measure first (gan_dist.evaluate --truncation, benchmarks/quality.py "
                             "--truncations): a cresnet whose noise enters only its first layer falls apart. 0: off.",
                             lower=0.0)
  eval_data_dir: str = _field("", "A folder of held-out images (same classes, never trained on) to evaluate against: "
                              "the reference statistics come from it, the floor is the training images' score "
                              "against it (what copying the training set scores), and 'memorization' is reported: "
                              "the share of samples nearer to a training image than to any held-out one (real "
                              "held-out images: about 0.5). Empty: the training data's own splits.")
  eval_cache_dir: str = _field("~/.cache/gan_dist", "Where evaluation caches its feature networks (one per dataset "
                               "and image shape) and real-data features; any TensorFlow filesystem, ~ expanded. Only "
                               "the chief writes it.")
  inception_weights: str = _field("", "A local Keras weights file of the standard Inception-v3 "
                                  "(keras.applications.InceptionV3, with its 1000-class top): evaluation then also "
                                  "reports FID and IS on it (299x299 resize), comparable with published figures. "
                                  "Nothing is downloaded.")

  def replace(self, **changes) -> "Config":
    """A copy with `changes`, validated."""
    return validate(dataclasses.replace(self, **changes))


FIELDS: Tuple[dataclasses.Field, ...] = dataclasses.fields(Config)
NAMES: Tuple[str, ...] = tuple(f.name for f in FIELDS)
_BY_NAME: Dict[str, dataclasses.Field] = {f.name: f for f in FIELDS}

# Fields that shape the variables in a checkpoint: a resumed run must agree with the run that wrote it.
CHECKPOINT_SHAPING_FIELDS = ("arch", "latent_dim", "num_classes", "precision", "ema_decay", "image_size",
                             "channels", "g_channels", "d_channels", "attention_resolution", "augment",
                             "class_loss_weight", "g_conditioning")
# Fields that decide which examples a step reads: changing them on resume breaks the data order (or trains on other
# data), so it needs --allow_data_position_change. (--data_dir may change: data that moved.)
# --seed and --shuffle_files belong here too: the order of the examples is a function of (seed, step), shuffled or
# not (data.py), so another seed on resume trains every later step on other examples.
DATA_POSITION_FIELDS = ("batch_size", "d_steps_per_g", "dataset", "split", "class_filter", "seed", "shuffle_files")
# Fields that do not change what a run learns or how it is scored (where and how it runs, how often it logs and
# saves, where caches are), and paths (a path names no setting a row could be compared by): left out of
# TensorBoard's HParams table (`hparams`).
NOT_HPARAMS = ("workdir", "data_dir", "eval_data_dir", "inception_weights", "strategy", "num_cpu_replicas", "cluster",
               "worker_hosts", "task_index", "communication", "peer_timeout_s", "cluster_start_timeout_s",
               "deterministic", "resume_step", "allow_data_position_change", "profile_steps", "skip_bad_images",
               "data_cache_dir", "steps_per_loop", "checkpoint_every", "max_to_keep", "keep_checkpoint_every_n_hours",
               "summary_every", "sample_every", "num_samples", "eval_every", "eval_cache_dir")
# Fields that legitimately differ between the workers of one run.
PER_WORKER_FIELDS = ("task_index",)


def _problem(field: dataclasses.Field, value) -> Optional[str]:
  """Why `value` is not allowed for `field`, or None."""
  meta = field.metadata
  kind = field.type
  if kind is bool:
    if not isinstance(value, bool):
      return f"must be true or false, got {value!r}"
  elif kind is int:
    if isinstance(value, bool) or not isinstance(value, int):
      return f"must be an integer, got {value!r}"
  elif kind is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f"must be a number, got {value!r}"
    if not math.isfinite(value):  # NaN passes every bound, and no field has a meaning for an infinity.
      return f"must be a finite number, got {value!r}"
  elif not isinstance(value, str):
    return f"must be a string, got {value!r}"
  if meta["choices"] is not None and value not in meta["choices"]:
    return f"must be one of {', '.join(map(str, meta['choices']))}"
  if meta["lower"] is not None and value < meta["lower"]:
    return f"must be >= {meta['lower']}"
  if meta["upper"] is not None and value > meta["upper"]:
    return f"must be <= {meta['upper']}"
  if meta["check"] is not None and not meta["check"][0](value):
    return meta["check"][1]
  return None


def validate(cfg: Config) -> Config:
  """Returns `cfg` if every field holds an allowed value (the flags' own rules).

  Raises:
    errors.UserError: naming the first bad field, e.g. "--batch_size=0: must be >= 1".
  """
  for field in FIELDS:
    value = getattr(cfg, field.name)
    problem = _problem(field, value)
    if problem:
      raise errors.UserError(f"--{field.name}={value!r}: {problem}")
  _check_augment(cfg)
  return cfg


def augment_policy(cfg: Config) -> Tuple[str, ...]:
  """The transforms of `cfg`'s augmentation, groups expanded, in order; () without --augment."""
  if cfg.augment == "none":
    return ()
  names = []
  for name in (cfg.augment_policy or DEFAULT_AUGMENT_POLICY[cfg.augment]).split(","):
    names.extend(AUGMENT_GROUPS.get(name.strip(), (name.strip(),)))
  return tuple(names)


def _check_augment(cfg: Config) -> None:
  """The rules between the augmentation fields (each field's own were checked already)."""
  defaults = Config()
  if cfg.augment != "ada":
    given = [f"--{n}={getattr(cfg, n)!r}" for n in ("ada_target", "ada_kimg")
             if getattr(cfg, n) != getattr(defaults, n)]
    if given:
      raise errors.UserError(f"{', '.join(given)} set without --augment=ada (now --augment={cfg.augment})")
  if cfg.augment == "none":
    if cfg.augment_policy:
      raise errors.UserError(f"--augment_policy={cfg.augment_policy!r} set with --augment=none; choose "
                             "--augment=diffaug or --augment=ada")
    return
  known = set(AUGMENT_TRANSFORMS) | set(AUGMENT_GROUPS)
  items = [n.strip() for n in cfg.augment_policy.split(",")] if cfg.augment_policy else []
  unknown = [n for n in items if n not in known]
  if unknown:
    raise errors.UserError(f"--augment_policy={cfg.augment_policy!r}: unknown transform {unknown[0]!r}; known: "
                           f"{', '.join(AUGMENT_TRANSFORMS)}, color")
  names = augment_policy(cfg)
  if len(set(names)) != len(names):
    raise errors.UserError(f"--augment_policy={cfg.augment_policy!r} names a transform twice")


def make_config(**values) -> Config:
  """A validated Config of the defaults with `values` (code, tests, notebooks: the same rules as the flags).

  Raises:
    errors.UserError: an unknown field or a value the flag would refuse.
  """
  unknown = sorted(set(values) - set(NAMES))
  if unknown:
    raise errors.UserError(f"unknown config fields {unknown}; known: {', '.join(NAMES)}")
  values = {k: float(v) if _BY_NAME[k].type is float and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in values.items()}
  return validate(Config(**values))


def define_flags(fv: flags.FlagValues) -> None:
  """Defines one absl flag per Config field on `fv`, with the field's default, help and rules."""
  for field in FIELDS:
    meta, name, default = field.metadata, field.name, field.default
    kwargs = dict(flag_values=fv)
    if field.type is bool:
      flags.DEFINE_boolean(name, default, meta["help"], **kwargs)
    elif field.type is str and meta["choices"]:
      flags.DEFINE_enum(name, default, meta["choices"], meta["help"], **kwargs)
    elif field.type is str:
      flags.DEFINE_string(name, default, meta["help"], **kwargs)
    else:
      define = flags.DEFINE_integer if field.type is int else flags.DEFINE_float
      define(name, default, meta["help"], lower_bound=meta["lower"], upper_bound=meta["upper"], **kwargs)
      if meta["choices"]:
        flags.register_validator(name, lambda v, c=meta["choices"]: v in c,
                                 f"must be one of {', '.join(map(str, meta['choices']))}", flag_values=fv)
    if meta["check"] is not None:
      flags.register_validator(name, meta["check"][0], meta["check"][1], flag_values=fv)


def from_flag_values(fv: flags.FlagValues, **overrides) -> Config:
  """The Config of parsed flag values (defined by `define_flags`), with optional overrides of single fields."""
  values = {name: fv[name].value for name in NAMES}
  values.update(overrides)
  return validate(Config(**values))


def to_flagfile(cfg: Config) -> str:
  """Flagfile text of `cfg`: one `--name=value` line per field, in table order."""
  lines = []
  for name in NAMES:
    value = getattr(cfg, name)
    if isinstance(value, bool):
      lines.append(f"--{name}" if value else f"--no{name}")
    else:
      lines.append(f"--{name}={value}")
  return "\n".join(lines) + "\n"


def from_flagfile(text: str, **overrides) -> Config:
  """The Config a flagfile text describes (fields it does not name keep their defaults).

  Lines naming a field this version does not have (a workdir written by another version) are skipped with a
  warning, so that an old workdir can still be sampled, evaluated or resumed.
  """
  argv = []
  for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    name = line.lstrip("-").split("=", 1)[0]
    if name not in _BY_NAME and not (name.startswith("no") and name[2:] in _BY_NAME):
      logging.warning("Ignoring %r: no such field in this version of gan_dist", line)
      continue
    argv.append(line)
  return from_args(argv, **overrides)


def from_args(argv: Sequence[str], **overrides) -> Config:
  """The Config of command-line flags `argv` (e.g. ["--flagfile=configs/dcgan.cfg", "--batch_size=64"]), parsed
  as `python -m gan_dist.main` parses them (the last value wins), on a private FlagValues.

  Raises:
    errors.UserError: an unknown flag or a bad value.
  """
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    rest = fv(["gan_dist", *argv])
  except flags.Error as e:
    raise errors.UserError(str(e)) from None
  if len(rest) > 1:
    raise errors.UserError(f"unexpected argument {rest[1]!r}: flags are --name=value")
  return from_flag_values(fv, **overrides)


def check_resume_compatible(saved: Config, current: Config) -> Optional[str]:
  """Returns a one-line message naming every field that differs in a way a resume cannot absorb, or None."""
  def shape(cfg, name):
    value = getattr(cfg, name)
    # Only whether an EMA exists, whether ADA's p exists and whether D has a class head shape the checkpoint.
    if name in ("ema_decay", "class_loss_weight"):
      return value > 0
    return (value == "ada") if name == "augment" else value

  def diff(name):
    return f"--{name} (workdir has {getattr(saved, name)!r}, this run {getattr(current, name)!r})"

  shaping = [diff(n) for n in CHECKPOINT_SHAPING_FIELDS if shape(saved, n) != shape(current, n)]
  if shaping:
    return (f"{current.workdir} holds a run with another model configuration: {'; '.join(shaping)}; use a new "
            "--workdir, or the workdir's flags")
  def data(cfg, name):
    value = getattr(cfg, name)
    # A pack trains exactly as its folder (datasets/packed.py): switching between them changes nothing.
    return "folder" if name == "dataset" and value == "packed" else value

  position = [diff(n) for n in DATA_POSITION_FIELDS if data(saved, n) != data(current, n)]
  if position and not current.allow_data_position_change:
    return (f"resuming {current.workdir} with {'; '.join(position)} would change which examples every later step "
            "reads; pass the workdir's values, or --allow_data_position_change if the change is meant")
  return None


def hparams(cfg: Config) -> Dict[str, Any]:
  """{field: value} of every field that shapes the result of a run (all but NOT_HPARAMS), for TensorBoard."""
  return {name: getattr(cfg, name) for name in NAMES if name not in NOT_HPARAMS}
