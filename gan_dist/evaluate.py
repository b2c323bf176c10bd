"""Evaluate a trained workdir: sample quality of its checkpoints, as JSON.

  python -m gan_dist.evaluate --workdir=W [--step=N | --all | --best] [--num=10000] [--inception_weights=PATH]

evaluates the latest checkpoint (or --step N, or the best one kept in checkpoints/best/, or with --all every kept
checkpoint) with the run's EMA generator when it kept one, and prints one JSON object: the metrics of
`gan_dist.eval.training.Evaluator` (fcd, kid, kid_std, classifier_score, precision, recall; label_accuracy overall
and per class for conditional models; fid and inception_score with --inception_weights), their real-data floors
(real test images scored the same way), and the feature network used (key, test accuracy, checksum). With --all it
also writes `W/eval/metrics.csv` (one row per step) and `W/eval/metrics.png` (each metric against the step, its
floor dashed). Reads W/flags.txt; --data_dir, --eval_cache_dir and --inception_weights given here override the
run's. Never trains the generator; the feature network is trained once per dataset and cached.
"""

import csv
import dataclasses
import io
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import errors
from gan_dist import flags as gan_flags
from gan_dist import state as state_lib


def define_flags(fv) -> None:
  """Flags of this CLI, on top of gan_dist's --workdir, --data_dir, --eval_cache_dir and --inception_weights."""
  gan_flags.define_evaluate_flags(fv)


def kept_steps(workdir: str) -> list:
  """Steps of the checkpoints the run's CheckpointManager keeps, oldest first."""
  state = tf.train.get_checkpoint_state(checkpoint_lib.checkpoint_dir(workdir))
  paths = list(state.all_model_checkpoint_paths) if state else []
  steps = sorted({int(p.rsplit("-", 1)[1]) for p in paths if tf.io.gfile.exists(p + ".index")})
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {checkpoint_lib.checkpoint_dir(workdir)}: is this a trained workdir?")
  return steps


def eval_config(workdir: str, fv):
  """The run's Config with this command's evaluation overrides."""
  cfg = gan_flags.config_from_flagfile(f"{workdir.rstrip('/')}/flags.txt", workdir=workdir)
  overrides = {name: fv[name].value for name in ("data_dir", "eval_cache_dir", "inception_weights")
               if fv[name].present}
  if fv.num is not None:
    overrides["eval_num"] = fv.num
  return dataclasses.replace(cfg, **overrides) if overrides else cfg


def write_csv(path: str, rows: list) -> None:
  """rows: [{"step": s, name: value, ...}]; columns: step, then every metric name in sorted order."""
  names = sorted({k for row in rows for k in row if k != "step"})
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(["step", *names])
  for row in rows:
    writer.writerow([row["step"], *[f"{row[n]:.6g}" if n in row else "" for n in names]])
  tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(buffer.getvalue())


def evaluate_workdir(workdir: str, cfg, steps=None, best: bool = False):
  """Evaluates checkpoints of `workdir`; returns (results [{"step", "metrics"}], evaluator).

  Args:
    workdir: the run directory.
    cfg: `eval_config(workdir, ...)`.
    steps: checkpoint steps to evaluate; None: the latest.
    best: evaluate the best checkpoint instead.
  """
  from gan_dist.eval import training as eval_training  # pylint: disable=g-import-not-at-top
  directory = checkpoint_lib.checkpoint_dir(workdir)
  for step in steps or []:  # Checked before the evaluator's set-up, which may train a network.
    if not tf.io.gfile.exists(f"{directory}/ckpt-{step}.index"):
      kept = ", ".join(str(s) for s in kept_steps(workdir))
      raise FileNotFoundError(f"No checkpoint at step {step} in {directory}; kept steps: {kept}")
  strategy = tf.distribute.get_strategy()
  state = state_lib.create_state(cfg, strategy, cfg.num_classes)
  checkpoint = checkpoint_lib.make_checkpoint(state)
  evaluator = eval_training.Evaluator(cfg, strategy, state.gan)
  results = []
  if best:
    info = checkpoint_lib.read_best(workdir)
    if info is None:
      raise FileNotFoundError(f"No best checkpoint in {checkpoint_lib.best_dir(workdir)}: train with --eval_every")
    checkpoint.restore(info["checkpoint"]).expect_partial()
    targets = [None]
  else:
    targets = steps or [None]
  for step in targets:
    if not best:
      checkpoint_lib.restore_for_inference(checkpoint, workdir, step)
    state.prepare_ema()
    at = int(state.step.numpy())
    results.append({"step": at, "metrics": evaluator(state.sampling_generator, at)})
  return results, evaluator


def check_selection(fv) -> None:
  if sum([fv.all, fv.best, fv.step is not None]) > 1:
    raise errors.UserError("pass at most one of --step, --all and --best")


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  workdir = fv.workdir.rstrip("/")
  check_selection(fv)
  cfg = eval_config(workdir, fv)
  steps = kept_steps(workdir) if fv.all else ([fv.step] if fv.step is not None else None)
  results, evaluator = evaluate_workdir(workdir, cfg, steps, best=fv.best)
  net = evaluator.feature_net
  report = {
      "workdir": workdir,
      "num": cfg.eval_num,
      "generator": "ema" if cfg.ema_decay > 0 else "generator",
      "floors": evaluator.floors,
      "feature_net": None if net is None else {"key": net.key, "test_accuracy": net.test_accuracy,
                                               "checksum": net.checksum},
  }
  if fv.all:
    from gan_dist import plots  # pylint: disable=g-import-not-at-top  (matplotlib: only when a plot is drawn)
    rows = [{"step": r["step"], **r["metrics"]} for r in results]
    report["evaluations"] = results
    report["csv"] = f"{workdir}/eval/metrics.csv"
    report["plot"] = f"{workdir}/eval/metrics.png"
    write_csv(report["csv"], rows)
    plots.write_bytes(report["plot"], plots.metrics_figure(rows, evaluator.floors, title=workdir))
  else:
    report.update(results[0])
  print(json.dumps(report, indent=1, sort_keys=False))


def run():
  gan_flags.run_tool(main, define_flags)


if __name__ == "__main__":
  run()
