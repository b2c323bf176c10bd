"""Evaluate a trained workdir: sample quality of its checkpoints, as JSON.

  python -m gan_dist.evaluate --workdir=W [--step=N | --all | --best] [--num=10000] [--inception_weights=PATH]

evaluates the latest checkpoint (or --step N, or the best one kept in checkpoints/best/, or with --all every kept
checkpoint) with the run's EMA generator when it kept one, and prints one JSON object: the metrics of
`gan_dist.eval.evaluator.Evaluator` (fcd, kid, kid_std, classifier_score, precision, recall; label_accuracy overall
and per class for conditional models; memorization for a run with --eval_data_dir; fid and inception_score with
--inception_weights), their real-data floors (real test images scored the same way), and the feature network used
(key, test accuracy, checksum). With --all it also writes `W/eval/metrics.csv` (one row per step) and
`W/eval/metrics.png` (each metric against the step, its floor dashed). Reads W/flags.txt; --data_dir,
--eval_cache_dir, --inception_weights and --truncation (BigGAN's truncation trick: noise truncated to [-T, T]) given
here override the run's. Never trains the generator; the feature network is trained once per dataset and cached. A
workdir without checkpoints, or a step that is not kept, is one line `error: ...` and exit code 2.
"""

import csv
import io
import json
import math
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags
import tensorflow as tf

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import cli
from gan_dist import errors
from gan_dist import figures
from gan_dist import files
from gan_dist import inference
from gan_dist import workdir as workdir_lib
from gan_dist.eval import evaluator as evaluator_lib

# Config fields this command's flags override when given (the rest comes from the run's flags.txt).
OVERRIDDEN_FIELDS = ("data_dir", "eval_cache_dir", "inception_weights", "truncation")


def define_flags(fv: flags.FlagValues) -> None:
  """Flags of this CLI, on top of the Config's (it reads --workdir and OVERRIDDEN_FIELDS)."""
  cli.define_checkpoint_flags(fv, "Evaluate")
  cli.show_in_help(fv, ("workdir",) + OVERRIDDEN_FIELDS)
  flags.DEFINE_boolean("all", False, "Evaluate every kept checkpoint; also write eval/metrics.csv and "
                       "eval/metrics.png into the workdir.", flag_values=fv)
  flags.DEFINE_integer("num", None, "Generated images (and real images per split) per evaluation (default: the "
                       "run's --eval_num).", lower_bound=4, flag_values=fv)


def check_selection(fv: flags.FlagValues) -> None:
  """Raises errors.UserError unless at most one of --step, --all and --best is given."""
  if sum([fv.all, fv.best, fv.step is not None]) > 1:
    raise errors.UserError("pass at most one of --step, --all and --best")


def eval_overrides(fv: flags.FlagValues) -> dict:
  """Config fields to replace in the run's flags.txt: OVERRIDDEN_FIELDS given on the command line, --num."""
  overrides = cli.given(fv, OVERRIDDEN_FIELDS)
  if fv.num is not None:
    overrides["eval_num"] = fv.num
  return overrides


def kept_steps(workdir: str) -> List[int]:
  """Steps of the checkpoints the run's CheckpointManager keeps, oldest first.

  Raises:
    errors.UserError: there is none.
  """
  directory = workdir_lib.checkpoint_dir(workdir)
  state = tf.train.get_checkpoint_state(directory)
  paths = list(state.all_model_checkpoint_paths) if state else []
  steps = sorted({int(p.rsplit("-", 1)[1]) for p in paths if tf.io.gfile.exists(p + ".index")})
  if not steps:
    raise errors.UserError(f"no checkpoint in {directory}: is {workdir} a trained workdir?")
  return steps


def evaluate_workdir(workdir: str, steps: Optional[Sequence[int]] = None, best: bool = False, **overrides
                     ) -> Tuple[List[dict], evaluator_lib.Evaluator]:
  """Evaluates checkpoints of `workdir` on the current (default) strategy.

  Args:
    workdir: the run directory.
    steps: checkpoint steps to evaluate, in this order; None: the latest.
    best: evaluate the best checkpoint instead (`steps` must be None).
    **overrides: Config fields replacing the run's (`eval_overrides`), e.g. eval_num, data_dir.

  Returns:
    ([{"step": int, "metrics": {name: float}}] one per checkpoint, the Evaluator: its cfg, floors, feature_net).

  Raises:
    errors.UserError: not a workdir, a step without a checkpoint, no best checkpoint; bad evaluation data.
  """
  run = inference.load(workdir, steps[0] if steps else None, best, **overrides)
  # Every checkpoint is found before the evaluator's set-up, which may train a network for minutes.
  paths = [run.path] + [checkpoint_lib.inference_path(workdir, step) for step in (steps or [])[1:]]
  evaluator = evaluator_lib.Evaluator(run.cfg, tf.distribute.get_strategy(), run.gan)
  results = []
  for i, path in enumerate(paths):
    if i:  # The first one was restored by inference.load; the state, and so the traced function, is reused.
      inference.restore(run.state, path)
      run.path = path
    results.append({"step": run.step, "metrics": evaluator(run.generator, run.step)})
  return results, evaluator


def write_csv(path: str, rows: Sequence[Dict[str, float]]) -> None:
  """Writes rows [{"step": s, name: value, ...}] as CSV: columns step, then every metric name in sorted order."""
  names = sorted({k for row in rows for k in row if k != "step"})
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(["step", *names])
  for row in rows:
    writer.writerow([row["step"], *[f"{row[n]:.6g}" if n in row else "" for n in names]])
  files.write_atomic(path, buffer.getvalue())


def main(argv, fv: Optional[flags.FlagValues] = None) -> int:
  """Evaluates, prints the JSON report, writes the CSV and plot with --all. `fv`: default absl's FLAGS."""
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS if fv is None else fv
  check_selection(fv)
  workdir = fv.workdir.rstrip("/")
  steps = kept_steps(workdir) if fv.all else ([fv.step] if fv.step is not None else None)
  if fv.all:  # Its CSV and plot are written after every evaluation: a folder that cannot take them is refused now.
    files.check_writable_dir(f"{workdir}/eval", "--all", label=f"{workdir}/eval (where --all writes its CSV and plot)")
  results, evaluator = evaluate_workdir(workdir, steps, best=fv.best, **eval_overrides(fv))
  net = evaluator.feature_net
  report = {
      "workdir": workdir,
      "num": evaluator.num,  # Generated images; the real sets' sizes follow (at most num each).
      "num_reference": evaluator.num_reference,
      "num_floor": evaluator.num_floor,
      "truncation": evaluator.cfg.truncation,
      "generator": "ema" if evaluator.cfg.ema_decay > 0 else "generator",
      "floors": evaluator.floors,
      "feature_net": None if net is None else {"key": net.key, "test_accuracy": net.test_accuracy,
                                               "checksum": net.checksum},
  }
  names = workdir_lib.read_class_names(workdir, evaluator.cfg.num_classes) if evaluator.gan.conditional else []
  if any(names):
    report["class_names"] = names  # Class k of label_accuracy/<k>, as the run recorded it ("" where unnamed).
  if fv.all:
    rows = [{"step": r["step"], **r["metrics"]} for r in results]
    report["evaluations"] = results
    report["csv"] = f"{workdir}/eval/metrics.csv"
    report["plot"] = f"{workdir}/eval/metrics.png"
    write_csv(report["csv"], rows)
    files.write_atomic(report["plot"], figures.metrics_figure(rows, evaluator.floors, title=workdir))
  else:
    report.update(results[0])
  print(json.dumps(_nan_to_null(report), indent=1, allow_nan=False))
  return errors.EXIT_OK


def _nan_to_null(value):
  """`value` with every float NaN (a class without images) as None: strict JSON (`null`), which every parser reads."""
  if isinstance(value, dict):
    return {k: _nan_to_null(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_nan_to_null(v) for v in value]
  return None if isinstance(value, float) and math.isnan(value) else value


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
