"""`python -m gan_dist.evaluate` on a tiny trained workdir: JSON, and with --all a CSV and a plot."""

import csv
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from gan_dist import evaluate
from tests.eval import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, mirrored2):
  return tiny_run.shared_run(tmp_path_factory, mirrored2)


def test_evaluate_all_prints_json_and_writes_csv_and_plot(run_cfg):
  proc = subprocess.run([sys.executable, "-m", "gan_dist.evaluate", f"--workdir={run_cfg.workdir}", "--all"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout[proc.stdout.index("{"):])
  assert [e["step"] for e in report["evaluations"]] == [2, 4]
  for evaluation in report["evaluations"]:
    assert {"fcd", "kid", "kid_std", "classifier_score", "precision", "recall", "label_accuracy",
            "label_accuracy/9"} <= set(evaluation["metrics"])
  assert {"fcd", "label_accuracy"} <= set(report["floors"]) and report["feature_net"]["checksum"]
  with tf.io.gfile.GFile(report["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["step"]) for r in rows] == [2, 4] and float(rows[1]["fcd"]) == pytest.approx(
      report["evaluations"][1]["metrics"]["fcd"], rel=1e-5)
  with tf.io.gfile.GFile(report["plot"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_one_step_matches_all(run_cfg):
  cfg = evaluate.eval_config(run_cfg.workdir, _no_flags())
  (result,), evaluator = evaluate.evaluate_workdir(run_cfg.workdir, cfg, [2])
  assert result["step"] == 2 and set(evaluator.floors) >= {"fcd", "label_accuracy"}
  (latest,), _ = evaluate.evaluate_workdir(run_cfg.workdir, cfg)
  assert latest["step"] == 4 and latest["metrics"]["fcd"] != result["metrics"]["fcd"]


def test_bad_inputs_fail_with_one_line(run_cfg):
  with pytest.raises(ValueError, match="pass at most one of --step, --all and --best"):
    evaluate.check_selection(_no_flags("--all", "--step=2"))
  cfg = evaluate.eval_config(run_cfg.workdir, _no_flags())
  with pytest.raises(FileNotFoundError, match="No checkpoint at step 3"):
    evaluate.evaluate_workdir(run_cfg.workdir, cfg, [3])
  with pytest.raises(FileNotFoundError, match="flags.txt not found"):
    evaluate.eval_config(run_cfg.workdir + "/nothing", _no_flags())


def _no_flags(*argv):
  """Flag values as the CLI sees them with `argv` (its --workdir comes from the tests' arguments instead)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from gan_dist import flags as gan_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  gan_flags.define_flags(fv)
  evaluate.define_flags(fv)
  fv(["evaluate", *argv])
  return fv
