"""The trainer loop: flat and readable. Checks (preflight.py) first, then the loop; builds nothing itself.

  check everything (replicas, data, workdir, model, checkpoint, other workers) -- nothing written yet
  SIGTERM/SIGINT on any worker meanwhile: exit 75, nothing written
  clean what a killed run left, write flags.txt
  while step < train_steps:
      train(iterator, n, stop=signal seen)      n steps in one tf.function; one all-reduce at the end
      non-finite losses or weights: stop (exit 3), nothing saved
      every summary_every:  window means + log line with images/s, ETA and where the time went   (chief)
      every sample_every:   fixed-noise grid -> TensorBoard + PNG                                (chief)
      every eval_every:     FCD, KID, ... of the (EMA) generator on every replica -> TensorBoard  (all workers)
                            (and the last and best FCD as the run's HParams metrics)
      every checkpoint_every, or when any worker got SIGTERM/SIGINT: save              (all workers)
      after an evaluation with a new lowest FCD: also save it into checkpoints/best/   (all workers)
      stop requested: exit 75 after the save
"""

import time
from typing import Dict

from absl import logging
import numpy as np
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import errors
from gan_dist import precision
from gan_dist import preemption
from gan_dist import preflight
from gan_dist import sampling
from gan_dist import state as state_lib
from gan_dist import strategy as strategy_lib
from gan_dist import summaries
from gan_dist import train_step as train_step_lib
from gan_dist import workdir as workdir_lib
from gan_dist.eval import evaluator as evaluator_lib

# The metric columns of TensorBoard's HParams table (scalar tags; the hparams/ ones are written at each evaluation).
HPARAM_METRICS = ("hparams/fcd_best", "hparams/fcd_last", "hparams/label_accuracy_last", "hparams/memorization_last",
                  "d_loss", "g_loss")


def write_flags(cfg: config_lib.Config, is_chief: bool) -> None:
  """Writes flags.txt on a fresh workdir (no checkpoint yet); on a resumed one keeps it and records this run's in
  flags_latest.txt, which the tools read (workdir.read_run_config)."""
  if not is_chief:
    return
  path = workdir_lib.flags_path(cfg.workdir)
  latest = workdir_lib.latest_flags_path(cfg.workdir)
  if tf.io.gfile.exists(path) and checkpoint_lib.has_checkpoint(cfg.workdir):
    path = latest
  elif tf.io.gfile.exists(latest):  # A fresh start over a run that never saved: its latest flags are not this run's.
    tf.io.gfile.remove(latest)
  workdir_lib.write_config(cfg, path)


def _next_boundary(step: int, cfg, extra=()) -> int:
  candidates = [cfg.train_steps, *[s for s in extra if s > step]]
  for every in (cfg.summary_every, cfg.sample_every, cfg.checkpoint_every, cfg.eval_every):
    if every:
      candidates.append((step // every + 1) * every)
  return min(candidates)


def _due(step: int, every: int, cfg) -> bool:
  return step % every == 0 or step == cfg.train_steps


class _Window:
  """What happened since the last summary: metric sums over steps, and wall time per activity."""

  ACTIVITIES = ("train", "checkpoints", "samples", "eval", "summaries")

  def __init__(self):
    self.steps = 0
    self.sums: Dict[str, float] = {}
    self.seconds = dict.fromkeys(self.ACTIVITIES, 0.0)

  def add(self, result: train_step_lib.ChunkResult) -> None:
    self.steps += result.steps
    for name, value in result.sums.items():
      self.sums[name] = self.sums.get(name, 0.0) + value

  def means(self) -> Dict[str, float]:
    return train_step_lib.means(self.sums, self.steps)

  def time_fractions(self) -> Dict[str, float]:
    total = max(sum(self.seconds.values()), 1e-9)
    return {name: seconds / total for name, seconds in self.seconds.items()}


class _Timer:
  def __init__(self, window: _Window, activity: str):
    self.window, self.activity = window, activity

  def __enter__(self):
    self.start = time.perf_counter()

  def __exit__(self, *exc):
    self.window.seconds[self.activity] += time.perf_counter() - self.start


def run(cfg: config_lib.Config, strategy: tf.distribute.Strategy) -> dict:
  """Trains until `cfg.train_steps`, resuming from `cfg.workdir` if it holds a checkpoint.

  Returns:
    The last logged metrics (host floats), with "step".

  Raises:
    errors.UserError: a problem found before anything was written.
    errors.CorruptCheckpointError, errors.DivergedError, errors.PeerFailureError, errors.Preempted: see errors.py.
  """
  try:
    # From the first check on (preemption.py): a SIGTERM while the run starts also ends it with exit 75.
    with preemption.StopRequest() as stop:
      return _run(cfg, strategy, stop)
  except strategy_lib.PEER_ERRORS as e:
    failure = strategy_lib.peer_failure(strategy, e)
    if failure is None:
      raise
    raise failure from e


def _run(cfg, strategy: tf.distribute.Strategy, stop: preemption.StopRequest) -> dict:
  # 1. Check everything before writing anything: a refused run leaves the workdir exactly as it was.
  is_chief = strategy_lib.is_chief(strategy)
  preflight.check_replicas(cfg, strategy)
  source = data.open_source(cfg)
  cfg = preflight.resolve_config(cfg, source)
  state = state_lib.create_state(cfg, strategy, cfg.num_classes)
  gan = state.gan
  # flags.txt records the shape the architecture resolved (0 = native), so that resuming with the native size
  # spelled out, or left at 0, is the same run.
  cfg = cfg.replace(image_size=int(gan.image_shape[0]), channels=int(gan.image_shape[2]))
  train_step_lib.check_jit_supported(cfg, strategy, gan)  # Here too: TrainStep checks it after flags.txt is written.
  preflight.check_workdir(cfg)
  checkpointer = checkpoint_lib.Checkpointer(cfg, state, strategy)
  preflight.check_model(cfg, state, reclaimable_bytes=checkpointer.leftover_bytes() if is_chief else 0)
  step = checkpointer.restore()
  strategy_lib.check_workers_agree(strategy, cfg, step)
  if step < cfg.train_steps:
    data.check_first_batch(cfg, source, gan.image_shape, start_step=step)
  evaluator = None
  if cfg.eval_every and step < cfg.train_steps:
    # Before any write: it refuses data without labels for a conditional model. It may train and cache the
    # dataset's feature network once (outside the workdir).
    evaluator = evaluator_lib.Evaluator(cfg, strategy, gan)
  # A stop asked for meanwhile, on any worker: all stop here, before writing (one collective; later requests ride on
  # the steps' all-reduce). The workers agree on the step, so all of them take part or none.
  if step < cfg.train_steps and strategy_lib.any_worker(strategy, stop.requested):
    raise errors.Preempted(step, stop.signal_name or "another worker's stop signal", saved=False)
  stop.training = True

  # 2. From here on the run writes to the workdir.
  checkpointer.clean_leftovers()
  fresh = not checkpoint_lib.has_checkpoint(cfg.workdir)
  if fresh and is_chief:
    events, grids = workdir_lib.remove_unsaved_run_outputs(cfg.workdir)
    if events or grids:
      logging.warning("Removed %d TensorBoard event file(s) and %d sample grid(s) of an earlier run of %s that saved "
                      "no checkpoint: this run starts afresh", events, grids, cfg.workdir)
  write_flags(cfg, is_chief)
  if is_chief and any(source.class_names):  # For people: the tools and the demo show label k by its name.
    workdir_lib.write_class_names(cfg.workdir, source.class_names)
  logging.info("Data: %d examples from %s", source.num_examples, source.name)
  if step >= cfg.train_steps:
    logging.info("Step %d already reaches --train_steps=%d: nothing to do", step, cfg.train_steps)
    return {"step": step}

  dataset = strategy.distribute_datasets_from_function(
      data.make_dataset_fn(cfg, source, gan.image_shape, start_step=step))
  iterator = iter(dataset)
  train = train_step_lib.make_train_step(cfg, strategy, state)
  writer = summaries.Writer(workdir_lib.tensorboard_dir(cfg.workdir), enabled=is_chief)
  # Points a killed run logged after the checkpoint resumed from (steps > step) are dropped; its own are kept.
  writer.start(step + 1)
  if fresh:
    # Once, as flags.txt: TensorBoard keeps a run's first HParams. The workdir's last component names the run's row
    # in the HParams table (a gs:// path too).
    writer.hparams(config_lib.hparams(cfg), HPARAM_METRICS, trial_id=cfg.workdir.rstrip("/").rsplit("/", 1)[-1])
  best = checkpointer.best
  best_fcd = best["value"] if best and best["metric"] == "fcd" else float("inf")
  grid_noise, grid_labels, grid_rows = sampling.class_rows(cfg.num_samples, gan.latent_dim, gan.num_classes, cfg.seed,
                                                           cfg.truncation)
  generate_fn = sampling.make_generate_fn(state.sampling_generator, gan)
  images_per_step = cfg.batch_size * cfg.d_steps_per_g
  profile = preflight.profile_range(cfg) if is_chief else None
  profile_edges = (profile[0] - 1, profile[1]) if profile else ()  # Chunks end where the trace starts and stops.
  logging.info("Training %s from step %d to %d: %d replica(s), global batch %d, %d steps per epoch",
               cfg.arch, step, cfg.train_steps, strategy.num_replicas_in_sync, cfg.batch_size,
               data.steps_per_epoch(source.num_examples, cfg))

  metrics = {}
  window = _Window()
  if evaluator is not None:
    # At the first step this run trains, after its start: at the resumed step itself they would be a second point
    # beside the earlier run's (the start drops only later ones).
    writer.scalars(step + 1, {f"eval_floor/{k}": v for k, v in evaluator.floors.items()})
  profiled_from = None  # The first step of the trace being recorded, or None.
  while step < cfg.train_steps:
    num_steps = min(cfg.steps_per_loop, _next_boundary(step, cfg, profile_edges) - step)
    # From its first step, or, resumed inside the range, from the resumed step: a stop without a start fails.
    if profile and profiled_from is None and profile[0] - 1 <= step < profile[1]:
      tf.profiler.experimental.start(workdir_lib.tensorboard_dir(cfg.workdir))
      profiled_from = step + 1
    with _Timer(window, "train"):
      result = train(iterator, num_steps, stop=lambda: stop.requested)
    first, step = step + 1, step + num_steps
    if profiled_from is not None and (step >= profile[1] or step >= cfg.train_steps or result.stop):
      tf.profiler.experimental.stop()
      logging.info("Wrote a profile of steps %d-%d to %s", profiled_from, step,
                   workdir_lib.tensorboard_dir(cfg.workdir))
      profiled_from = None
    if result.diverged:
      raise errors.DivergedError(_divergence_message(cfg, result, first, step, checkpointer))
    window.add(result)

    if is_chief and _due(step, cfg.sample_every, cfg):
      with _Timer(window, "samples"):
        state.prepare_ema()
        grid = sampling.image_grid(sampling.generate(generate_fn, grid_noise, grid_labels), rows=grid_rows)
        writer.image(step, "samples", grid)
        summaries.write_png(workdir_lib.sample_grid_path(cfg.workdir, step), grid)

    scores = None
    if evaluator is not None and _due(step, cfg.eval_every, cfg):
      with _Timer(window, "eval"):
        state.prepare_ema()
        scores = evaluator(state.sampling_generator, step)
        writer.scalars(step, {f"eval/{k}": v for k, v in scores.items()})
        best_fcd = min(best_fcd, scores["fcd"]) if np.isfinite(scores["fcd"]) else best_fcd
        writer.scalars(step, {"hparams/fcd_last": scores["fcd"], "hparams/fcd_best": best_fcd,
                              **{f"hparams/{k}_last": scores[k] for k in ("label_accuracy", "memorization")
                                 if k in scores}})

    if _due(step, cfg.checkpoint_every, cfg) or result.stop:
      with _Timer(window, "checkpoints"):
        path = checkpointer.save(step)
      if is_chief:
        logging.info("Saved checkpoint %s", path)
      else:  # Its own copy went to a temporary directory, already removed (checkpoint.Checkpointer.save).
        logging.info("Saved checkpoint step %d with the chief (which writes %s)", step, path)
    if scores is not None and np.isfinite(scores["fcd"]):
      with _Timer(window, "checkpoints"):
        checkpointer.save_best(step, "fcd", scores["fcd"])
    # Last, so that its line counts this step's samples, evaluation and checkpoint; also at a stop, so that the
    # steps since the last summary are logged (a resumed run's next point averages only its own steps).
    if _due(step, cfg.summary_every, cfg) or result.stop:
      started = time.perf_counter()
      metrics = _summarize(cfg, state, window, step, images_per_step, writer)
      window = _Window()
      window.seconds["summaries"] = time.perf_counter() - started  # Writing a summary counts in the next one.
    writer.flush()
    if result.stop and step < cfg.train_steps:
      strategy_lib.barrier(strategy)  # No worker leaves while the chief still writes.
      writer.close()
      raise errors.Preempted(step, stop.signal_name or "another worker's stop signal")

  strategy_lib.barrier(strategy)
  writer.close()
  metrics["step"] = step
  return metrics


def _summarize(cfg, state, window: _Window, step: int, images_per_step: int, writer) -> Dict[str, float]:
  """Writes the window's means, loss scales and time split to TensorBoard and the log (chief); returns them."""
  metrics = window.means()
  metrics.update({k: float(v) for k, v in precision.loss_scales(state).items()})
  metrics.update({k: float(v) for k, v in precision.skipped_steps(state).items()})
  steps_per_sec = window.steps / max(window.seconds["train"], 1e-9)
  metrics["steps_per_sec"] = steps_per_sec
  metrics["images_per_sec"] = steps_per_sec * images_per_step
  fractions = window.time_fractions()
  metrics.update({f"time/{name}": value for name, value in fractions.items()})
  writer.scalars(step, metrics)
  eta = (cfg.train_steps - step) / max(steps_per_sec, 1e-9)
  logging.info("step %d/%d  d_loss %.4f  g_loss %.4f  D(real) %.3f  D(fake) %.3f  %.1f images/s  ETA %s  "
               "(time: %s)", step, cfg.train_steps, metrics["d_loss"], metrics["g_loss"], metrics["d_real_output"],
               metrics["d_fake_output"], metrics["images_per_sec"], _format_eta(eta),
               ", ".join(f"{name} {100 * value:.0f}%" for name, value in fractions.items()))
  return metrics


def _divergence_message(cfg, result, first: int, last: int, checkpointer) -> str:
  what = []
  if result.nonfinite_losses:
    what.append("losses")
  if result.nonfinite_weights:
    what.append("weights")
  good = [s for s in checkpointer.candidates() if s < first]
  kept = (f"the last good checkpoint, step {good[0]}, is kept and the same command resumes from it"
          if good else "no checkpoint was saved before it")
  steps = f"at step {last}" if first == last else f"between step {first} and step {last}"
  return (f"{' and '.join(what)} became non-finite {steps}: nothing of these steps was "
          f"saved; {kept}. Lower --g_lr/--d_lr (now {cfg.g_lr:g}/{cfg.d_lr:g}), add --gp_weight or --r1_weight, or "
          "use --precision=float32")


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
