"""Every flag of gan_dist and its default, and the frozen `Config` built from them.

This is the only module that reads absl flags. Everything else takes a `Config`, so tests and tools can build one
with `make_config(arch="mlp", ...)` without touching the global `FLAGS`.

A workdir's `flags.txt` is a flagfile holding every `Config` field, so `config_from_flagfile` rebuilds the exact
configuration of a run (used by resume checks, `sample.py` and `export.py`).
"""

import dataclasses
import sys
from typing import Callable, Optional, Sequence

from absl import flags
import tensorflow as tf

from gan_dist import errors

FLAGS = flags.FLAGS

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LOSSES = ("non_saturating", "minimax", "least_squares", "hinge", "wasserstein")


@dataclasses.dataclass(frozen=True)
class Config:
  """The resolved configuration of one run. Field names equal flag names; defaults live in `define_flags`."""

  # Run and infrastructure.
  workdir: str
  strategy: str
  num_cpu_replicas: int
  cluster: str
  worker_hosts: str
  task_index: int
  communication: str
  peer_timeout_s: int
  cluster_start_timeout_s: int
  seed: int
  deterministic: bool
  resume_step: int
  allow_data_position_change: bool
  profile_steps: str
  # Data.
  dataset: str
  data_dir: str
  split: str
  class_filter: int
  num_classes: int
  shuffle_files: bool
  image_size: int
  channels: int
  crop: str
  random_flip: bool
  skip_bad_images: bool
  data_cache_dir: str
  # Model.
  arch: str
  latent_dim: int
  sync_batchnorm: bool
  # Objective and optimisation.
  loss: str
  gp_weight: float
  r1_weight: float
  d_steps_per_g: int
  g_lr: float
  d_lr: float
  beta1: float
  beta2: float
  ema_decay: float
  batch_size: int
  train_steps: int
  precision: str
  jit_compile: bool
  # Loop, checkpoints and monitoring.
  steps_per_loop: int
  checkpoint_every: int
  max_to_keep: int
  keep_checkpoint_every_n_hours: float
  summary_every: int
  sample_every: int
  num_samples: int
  # Evaluation.
  eval_every: int
  eval_num: int
  eval_cache_dir: str
  inception_weights: str


def define_flags(fv: flags.FlagValues) -> None:
  """Defines every gan_dist flag on `fv` (the global FLAGS, or a private FlagValues in tests and tools)."""
  d = dict(flag_values=fv)
  # Run and infrastructure.
  flags.DEFINE_string("workdir", "/tmp/gan_dist", "Run directory: flags.txt, checkpoints/, tensorboard/, samples/. "
                      "A workdir holding a checkpoint is resumed from it.", **d)
  flags.DEFINE_enum("strategy", "mirrored", STRATEGIES, "tf.distribute strategy: one_device (one GPU or the CPU), "
                    "mirrored (all local GPUs, or --num_cpu_replicas logical CPUs), multi_worker_mirrored "
                    "(several processes or machines; cluster from TF_CONFIG, Slurm or --worker_hosts).", **d)
  flags.DEFINE_integer("num_cpu_replicas", 1, "On a host without GPUs, split the CPU into this many logical devices "
                       "so that --strategy=mirrored runs this many replicas (testing distribution without a GPU; "
                       "mirrored only).",
                       lower_bound=1, **d)
  flags.DEFINE_enum("cluster", "tf_config", ("tf_config", "slurm", "hosts"),
                    "Where multi_worker_mirrored finds its cluster: the TF_CONFIG variable, Slurm's environment "
                    "(SlurmClusterResolver), or --worker_hosts with --task_index.", **d)
  flags.DEFINE_string("worker_hosts", "", "Comma-separated host:port of every worker (with --cluster=hosts).", **d)
  flags.DEFINE_integer("task_index", 0, "Index of this worker in --worker_hosts (with --cluster=hosts).", **d)
  flags.DEFINE_enum("communication", "auto", ("auto", "ring", "nccl"),
                    "Collective implementation of multi_worker_mirrored (nccl needs GPUs).", **d)
  flags.DEFINE_integer("peer_timeout_s", 30, "multi_worker_mirrored: a worker that sends no heartbeat for this many "
                       "seconds (dead, frozen or unreachable) fails the run on every other worker, which then exits "
                       "with code 5 instead of waiting forever; collectives stuck this long fail too.",
                       lower_bound=5, **d)
  flags.DEFINE_integer("cluster_start_timeout_s", 900, "multi_worker_mirrored: how long the workers wait for each "
                       "other to start before failing (a worker that never comes up must not hang the rest).",
                       lower_bound=10, **d)
  flags.DEFINE_integer("seed", 0, "Seed of the data order, the initial weights, the noise and the fixed sample noise.",
                       **d)
  flags.DEFINE_boolean("deterministic", False, "Op determinism (tf.config.experimental.enable_op_determinism): with "
                       "the noise and data order already functions of (seed, step), a run interrupted and resumed "
                       "any number of times ends with the same weights as an uninterrupted one. Slower on GPUs.", **d)
  flags.DEFINE_integer("resume_step", -1, "Resume from the checkpoint of this step instead of the latest one (e.g. "
                       "when the latest is damaged; the error message names the newest one that restores). -1: the "
                       "latest.", lower_bound=-1, **d)
  flags.DEFINE_boolean("allow_data_position_change", False, "Allow resuming a workdir with another --batch_size or "
                       "--d_steps_per_g. Both decide which examples a step reads, so a resumed run would not continue "
                       "the data order where it stopped; refused unless this flag says the change is meant.", **d)
  flags.DEFINE_string("profile_steps", "", "FIRST,LAST: write a TensorBoard profiler trace of these train steps to "
                      "<workdir>/tensorboard (chief only), e.g. 100,110. Empty: no profiling.", **d)
  # Data.
  flags.DEFINE_string("dataset", "mnist", "Image dataset: 'folder' (the image files below --data_dir, class "
                      "subfolders as labels) or a TensorFlow Datasets name (mnist, fashion_mnist, cifar10, celeb_a, "
                      "...), read by random access from --data_dir.", **d)
  flags.DEFINE_string("data_dir", "", "The folder of images (--dataset=folder), a TFDS data dir, or, for mnist and "
                      "fashion_mnist, a folder holding their four IDX .gz files (read directly, offline). Empty: "
                      "TFDS's default data dir. Any TensorFlow filesystem (gs://...).", **d)
  flags.DEFINE_string("split", "train", "Dataset split to train on.", **d)
  flags.DEFINE_integer("class_filter", -1, "Train on this class only (e.g. 5 for the digit 5); -1 keeps all.", **d)
  flags.DEFINE_integer("num_classes", 0, "Number of label classes for conditional models; 0 takes it from the "
                       "dataset (the resolved value is written to flags.txt).", lower_bound=0, **d)
  flags.DEFINE_boolean("shuffle_files", True, "Reshuffle the examples every epoch (order is a function of --seed "
                       "and the step, so a resumed run sees the same batches).", **d)
  flags.DEFINE_integer("image_size", 0, "Height and width of the images the model makes and trains on (every "
                       "source is cropped per --crop and resized to it); 0: the architecture's native size (28 for the "
                       "MNIST models, 32 for dcgan32, 64 for dcgan64). An architecture refuses a size it cannot make.",
                       lower_bound=0, **d)
  flags.DEFINE_integer("channels", 0, "Image channels: 1 (grayscale) or 3 (RGB); every source is converted (gray, "
                       "gray+alpha, RGB, RGBA, palette, 16-bit). 0: the architecture's native channels.", **d)
  flags.register_validator("channels", lambda v: v in (0, 1, 3), "must be 1 (grayscale), 3 (RGB) or 0 (the "
                           "architecture's native channels)", flag_values=fv)
  flags.DEFINE_enum("crop", "center", ("center", "none"), "Before resizing to --image_size: center (cut the largest "
                    "centred square, keeping the aspect ratio) or none (stretch the whole image).", **d)
  flags.DEFINE_boolean("random_flip", False, "Flip each training image horizontally with probability 1/2, drawn from "
                       "(--seed, step, position in the batch), so a resumed run flips the same images.", **d)
  flags.DEFINE_boolean("skip_bad_images", True, "An image file that cannot be decoded (corrupt, empty, not an image) "
                       "is logged, counted and replaced by a deterministic substitute example; --noskip_bad_images "
                       "stops the run at the first one instead.", **d)
  flags.DEFINE_string("data_cache_dir", "", "Where one-time data conversions are written: a TFDS dataset prepared as "
                      "TFRecord (sequential only) is converted once to ArrayRecord (random access) under "
                      "DIR/<name>/<config>/<version>. Empty: <TFDS data dir>/gan_dist_array_record. Never the workdir.",
                      **d)
  # Model.
  flags.DEFINE_string("arch", "dcgan", "Architecture: a module name under gan_dist/models/.", **d)
  flags.DEFINE_integer("latent_dim", 100, "Size of the generator's noise vector.", lower_bound=1, **d)
  flags.DEFINE_boolean("sync_batchnorm", True, "BatchNormalization uses statistics of the global batch (all "
                       "replicas) and keeps identical moving statistics on every replica.", **d)
  # Objective and optimisation.
  flags.DEFINE_enum("loss", "non_saturating", LOSSES, "GAN loss (per example, from logits).", **d)
  flags.DEFINE_float("gp_weight", 0.0, "Weight of the WGAN-GP gradient penalty (on interpolates of real and fake).",
                     lower_bound=0.0, **d)
  flags.DEFINE_float("r1_weight", 0.0, "Weight of the R1 penalty (squared gradient norm of D on real images).",
                     lower_bound=0.0, **d)
  flags.DEFINE_integer("d_steps_per_g", 1, "Discriminator updates per generator update; each takes a new batch.",
                       lower_bound=1, **d)
  flags.DEFINE_float("g_lr", 1e-4, "Generator Adam learning rate.", **d)
  flags.DEFINE_float("d_lr", 1e-4, "Discriminator Adam learning rate.", **d)
  flags.DEFINE_float("beta1", 0.9, "Adam beta_1 of both optimizers.", **d)
  flags.DEFINE_float("beta2", 0.999, "Adam beta_2 of both optimizers.", **d)
  flags.DEFINE_float("ema_decay", 0.0, "If > 0, keep an exponential moving average of G's weights with this decay "
                     "(in [0, 1); warmed up over the first steps); samples, evaluation and exports then use it.", **d)
  flags.register_validator("ema_decay", lambda v: 0.0 <= v < 1.0,
                           "must be in [0, 1): 0 disables the EMA, e.g. 0.999 averages about 1,000 steps",
                           flag_values=fv)
  flags.DEFINE_integer("batch_size", 256, "Global batch size, split evenly over all replicas of all workers.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("train_steps", 23400, "Total generator steps to reach; a resumed run stops there too.",
                       lower_bound=0, **d)
  flags.DEFINE_enum("precision", "float32", PRECISIONS, "Compute precision. mixed_float16 wraps each optimizer in "
                    "its own LossScaleOptimizer; mixed_bfloat16 needs no loss scaling.", **d)
  flags.DEFINE_boolean("jit_compile", False, "Compile the per-replica step with XLA where TensorFlow supports it.",
                       **d)
  # Loop, checkpoints and monitoring.
  flags.DEFINE_integer("steps_per_loop", 10, "Train steps run inside one tf.function call (fewer host round trips).",
                       lower_bound=1, **d)
  flags.DEFINE_integer("checkpoint_every", 1000, "Save a checkpoint every this many steps (and at the end).",
                       lower_bound=1, **d)
  flags.DEFINE_integer("max_to_keep", 5, "Checkpoints kept by the CheckpointManager.", lower_bound=1, **d)
  flags.DEFINE_float("keep_checkpoint_every_n_hours", 0.0, "Also keep one checkpoint per this many hours "
                     "(0 disables).", lower_bound=0.0, **d)
  flags.DEFINE_integer("summary_every", 100, "Write TensorBoard scalars and a log line every this many steps.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("sample_every", 1000, "Write a sample grid (TensorBoard image and PNG) every this many steps.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("num_samples", 100, "Images in a sample grid (conditional models: rounded to whole rows of "
                       "classes).", lower_bound=1, **d)
  # Evaluation.
  flags.DEFINE_integer("eval_every", 0, "Evaluate the (EMA) generator every this many steps: FCD, KID, classifier "
                       "score, precision/recall (and label accuracy when conditional) on --eval_num samples, to "
                       "TensorBoard and the log; the best checkpoint by FCD is kept in checkpoints/best/. 0: off.",
                       lower_bound=0, **d)
  flags.DEFINE_integer("eval_num", 10000, "Generated images per evaluation, and real images of each split for the "
                       "reference statistics and the real-data floor.", lower_bound=4, **d)
  flags.DEFINE_string("eval_cache_dir", "~/.cache/gan_dist", "Where evaluation caches its feature networks (one per "
                      "dataset and image shape) and real-data features; any TensorFlow filesystem, ~ expanded. Only "
                      "the chief writes it.", **d)
  flags.DEFINE_string("inception_weights", "", "A local Keras weights file of the standard Inception-v3 "
                      "(keras.applications.InceptionV3, with its 1000-class top): evaluation then also reports FID "
                      "and IS on it (299x299 resize), comparable with published figures. Nothing is downloaded.",
                      **d)


define_flags(FLAGS)


def define_sample_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.sample` (on top of --workdir and --seed, which it reads as the noise seed)."""
  flags.DEFINE_integer("num", 64, "Number of images to sample.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("out", "samples.npz", "Output .npz file (images uint8 [N, H, W, C]; labels if conditional).",
                      flag_values=fv)
  flags.DEFINE_integer("label", None, "Conditional models: sample this class only (default: cycle through classes).",
                       flag_values=fv)
  flags.DEFINE_integer("step", None, "Sample the checkpoint of this step (default: the latest).", flag_values=fv)
  flags.DEFINE_string("grid", "", "Also write the images as one PNG grid to this file (conditional models: one row "
                      "per class, --num rounded down to whole rows); with --grid and no --out, only the grid.",
                      flag_values=fv)


EXPORT_FORMATS = ("saved_model", "keras")


def define_export_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.export` (on top of --workdir)."""
  flags.DEFINE_string("export_dir", "", "Where to write the SavedModel (default: <workdir>/export); the older "
                      "name of --out.", flag_values=fv)
  flags.DEFINE_integer("step", None, "Export the checkpoint of this step (default: the latest).", flag_values=fv)
  flags.DEFINE_enum("format", "saved_model", EXPORT_FORMATS, "saved_model: a SavedModel directory with a "
                    "serving_default signature (noise [+ labels] -> uint8 images); keras: a .keras file of the "
                    "float32 generator.", flag_values=fv)
  flags.DEFINE_string("out", "", "Where to write the export (default: <workdir>/export for saved_model, "
                      "<workdir>/generator.keras for keras).", flag_values=fv)


def define_evaluate_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.evaluate` (on top of the training flags it reads)."""
  flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step (default: the latest).", flag_values=fv)
  flags.DEFINE_boolean("all", False, "Evaluate every kept checkpoint; also write eval/metrics.csv and "
                       "eval/metrics.png into the workdir.", flag_values=fv)
  flags.DEFINE_boolean("best", False, "Evaluate the best checkpoint (checkpoints/best/).", flag_values=fv)
  flags.DEFINE_integer("num", None, "Generated images (and real images per split) per evaluation (default: the "
                       "run's --eval_num).", lower_bound=4, flag_values=fv)


def define_plots_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.plots` (on top of the training flags it reads)."""
  flags.DEFINE_string("out_dir", "", "Where to write the figures (default: <workdir>/plots).", flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint for the generated figures (default: the latest).", flag_values=fv)


def define_class_accuracy_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.eval.class_accuracy` (on top of the training flags it reads)."""
  flags.DEFINE_integer("num_per_class", 100, "Images sampled per class.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step (default: the latest).", flag_values=fv)


def define_classifier_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.eval.classifier` (on top of the training flags it reads)."""
  flags.DEFINE_string("image_shape", "", "H,W,C the network takes, e.g. 64,64,3 for --arch=dcgan64 (default: the "
                      "dataset's own shape).", flag_values=fv)
  flags.DEFINE_string("out", "", "Directory to write weights.npz and info.json to (default: the evaluation cache "
                      "entry, <eval_cache_dir>/classifier/<key>, which evaluation then loads).", flag_values=fv)


def define_serve_flags(fv: flags.FlagValues) -> None:
  """Flags of `python -m gan_dist.serve` (on top of the training flags it reads)."""
  flags.DEFINE_string("saved_model", "", "Serve this SavedModel export (python -m gan_dist.export) instead of a "
                      "--workdir.", flag_values=fv)
  flags.DEFINE_integer("step", None, "Serve the checkpoint of this step of --workdir (default: the latest).",
                       flag_values=fv)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; put a reverse proxy "
                      "in front of it for the public).", flag_values=fv)
  flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one.", lower_bound=0, upper_bound=65535,
                       flag_values=fv)
  flags.DEFINE_integer("threads", 4, "Request threads of the server (generation itself runs one batch at a time).",
                       lower_bound=1, flag_values=fv)


_FIELDS = tuple(f.name for f in dataclasses.fields(Config))


def config_fields() -> tuple:
  """Names of the Config fields (= flag names), in definition order."""
  return _FIELDS


def config_from_flags(fv: flags.FlagValues = FLAGS, **overrides) -> Config:
  """Builds the frozen Config from parsed flag values, with optional overrides of single fields."""
  values = {name: fv[name].value for name in _FIELDS}
  values.update(overrides)
  return Config(**values)


def _fresh_flag_values(argv: Sequence[str] = ()) -> flags.FlagValues:
  fv = flags.FlagValues()
  define_flags(fv)
  fv(["gan_dist", *argv])
  return fv


def make_config(**overrides) -> Config:
  """Returns a Config of the defaults with `overrides` (for tests, benchmarks and notebooks)."""
  unknown = set(overrides) - set(_FIELDS)
  if unknown:
    raise ValueError(f"Unknown config fields {sorted(unknown)}; known: {sorted(_FIELDS)}")
  return config_from_flags(_fresh_flag_values(), **overrides)


def config_to_flagfile(cfg: Config) -> str:
  """Renders a Config as flagfile text (one `--name=value` per field)."""
  lines = []
  for name in _FIELDS:
    value = getattr(cfg, name)
    if isinstance(value, bool):
      lines.append(f"--{name}" if value else f"--no{name}")
    else:
      lines.append(f"--{name}={value}")
  return "\n".join(lines) + "\n"


def write_flagfile(cfg: Config, path: str) -> None:
  """Writes `cfg` to `path` atomically: other workers may read flags.txt while the chief writes it, and a process
  killed mid-write must leave the old file or the new one, never half of it."""
  directory = path.rsplit("/", 1)[0] if "/" in path else "."
  tf.io.gfile.makedirs(directory)
  tmp = f"{path}{TMP_SUFFIX}"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(config_to_flagfile(cfg))
  tf.io.gfile.rename(tmp, path, overwrite=True)


# Suffix of files being written (see write_flagfile); a run cleans up leftovers of a killed predecessor.
TMP_SUFFIX = ".gan_dist_tmp"


def config_from_flagfile(path: str, **overrides) -> Config:
  """Rebuilds the Config a run wrote to `path` (e.g. `<workdir>/flags.txt`)."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} not found: is this a gan_dist workdir?")
  # absl reads flagfiles with open(): give it the text on the command line instead, so any filesystem works.
  with tf.io.gfile.GFile(path) as f:
    argv = [line.strip() for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
  return config_from_flags(_fresh_flag_values(argv), **overrides)


def run_tool(main: Callable, define_tool_flags: Callable[[flags.FlagValues], None]) -> None:
  """Runs a workdir tool (sample, export, eval): defines its own flags, then `main`; user errors exit in one line."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from gan_dist import main as main_lib  # pylint: disable=g-import-not-at-top  (main imports this module)
  define_tool_flags(FLAGS)
  try:
    app.run(main, flags_parser=main_lib.parse_flags)  # Flag errors: one line, exit 2, as for training.
  except (FileNotFoundError, errors.UserError) as e:
    sys.exit(main_lib._fail(e))  # pylint: disable=protected-access  (the one-line format of main, exit 2)


# Fields that shape the variables in a checkpoint: a resumed run must agree with the run that wrote it.
CHECKPOINT_SHAPING_FIELDS = ("arch", "latent_dim", "num_classes", "precision", "ema_decay", "image_size",
                             "channels")
# Fields that decide which examples a step reads: changing them on resume breaks the data order, so it needs
# --allow_data_position_change.
DATA_POSITION_FIELDS = ("batch_size", "d_steps_per_g")
# Fields that legitimately differ between the workers of one run.
PER_WORKER_FIELDS = ("task_index",)


def check_resume_compatible(saved: Config, current: Config) -> Optional[str]:
  """Returns a one-line message naming every field that differs in a way a resume cannot absorb, or None."""
  def shape(cfg, name):
    value = getattr(cfg, name)
    return value > 0 if name == "ema_decay" else value  # Only whether an EMA exists shapes the checkpoint.

  def diff(name):
    return f"--{name} (workdir has {getattr(saved, name)!r}, this run {getattr(current, name)!r})"

  shaping = [diff(n) for n in CHECKPOINT_SHAPING_FIELDS if shape(saved, n) != shape(current, n)]
  if shaping:
    return (f"{current.workdir} holds a run with another model configuration: {'; '.join(shaping)}; use a new "
            "--workdir, or the workdir's flags")
  position = [diff(n) for n in DATA_POSITION_FIELDS if getattr(saved, n) != getattr(current, n)]
  if position and not current.allow_data_position_change:
    return (f"resuming {current.workdir} with {'; '.join(position)} would change which examples every later step "
            "reads; pass the workdir's values, or --allow_data_position_change if the change is meant")
  return None


def differing_fields(a: Config, b: Config) -> list:
  """Names of the fields (other than PER_WORKER_FIELDS) on which two workers' configs differ."""
  return [name for name in _FIELDS if name not in PER_WORKER_FIELDS and getattr(a, name) != getattr(b, name)]
