"""`python -m gan_dist.evaluate` on a tiny trained workdir: JSON, --all's CSV and plot, --best, one-line errors."""

import csv
import json
import os
import shutil
import subprocess

from absl import flags
import pytest

from gan_dist import cli
from gan_dist import errors
from gan_dist import evaluate
from gan_dist import figures
from gan_dist import inference
from gan_dist import workdir as workdir_lib
from gan_dist import train
from tests import helpers
from tests import subprocs
from tests.eval import tiny_run

MAIN_KEYS = {"fcd", "kid", "kid_std", "classifier_score", "precision", "recall", "label_accuracy", "label_accuracy/9"}


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, one_device):
  return tiny_run.shared_run(tmp_path_factory, one_device)  # The tool reads the workdir; replicas are not the point.


def _flags(*argv) -> flags.FlagValues:
  """Flag values as the CLI parses `argv`: the Config's flags and the tool's own."""
  fv = flags.FlagValues()
  cli.define_config_flags(fv)
  evaluate.define_flags(fv)
  fv(["evaluate", *argv])
  return fv


def _copy(run_cfg, tmp_path) -> str:
  """A private copy of the shared workdir (tests that add to it must not change what other tests read)."""
  return shutil.copytree(run_cfg.workdir, str(tmp_path / "workdir"))


def test_all_evaluates_every_kept_step_as_single_step_evaluations_do(run_cfg):
  steps = evaluate.kept_steps(run_cfg.workdir)
  assert steps == [2, 4]
  together, evaluator = evaluate.evaluate_workdir(run_cfg.workdir, steps)
  assert [r["step"] for r in together] == steps
  (step_2,), _ = evaluate.evaluate_workdir(run_cfg.workdir, [2])
  (latest,), _ = evaluate.evaluate_workdir(run_cfg.workdir)  # Step 4 alone, as the default (latest) step.
  assert latest["step"] == 4
  for alone, result in zip((step_2, latest), together):
    assert alone["step"] == result["step"] and set(alone["metrics"]) >= MAIN_KEYS
    assert alone["metrics"] == pytest.approx(result["metrics"], rel=1e-6, abs=1e-9), result["step"]
  # The two checkpoints are different generators: the comparison above compares something.
  assert together[0]["metrics"]["fcd"] != together[1]["metrics"]["fcd"]
  assert set(evaluator.floors) >= MAIN_KEYS and evaluator.num == run_cfg.eval_num


def test_main_all_prints_json_and_writes_csv_and_plot(run_cfg, tmp_path, capsys):
  workdir = _copy(run_cfg, tmp_path)
  names = [f"digit {k}" for k in range(9)] + [""]  # As class folders would name them (the IDX data named none).
  workdir_lib.write_class_names(workdir, names)
  assert evaluate.main([], _flags(f"--workdir={workdir}", "--all", "--num=16")) == errors.EXIT_OK
  out = capsys.readouterr().out
  report = json.loads(out[out.index("{"):])
  assert report["class_names"] == names  # Which class each label_accuracy/<k> is.
  assert report["num"] == 16 and report["generator"] == "generator" and report["feature_net"]["checksum"]
  # The real sets' sizes and the noise's truncation are part of what was measured.
  assert (report["num_reference"], report["num_floor"], report["truncation"]) == (16, 16, 0.0)
  assert [e["step"] for e in report["evaluations"]] == [2, 4]
  assert all(MAIN_KEYS <= set(e["metrics"]) for e in report["evaluations"]) and MAIN_KEYS <= set(report["floors"])
  assert report["csv"] == f"{workdir}/eval/metrics.csv" and report["plot"] == f"{workdir}/eval/metrics.png"
  with open(report["csv"], encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["step"]) for r in rows] == [2, 4]
  for row, evaluation in zip(rows, report["evaluations"]):
    assert float(row["fcd"]) == pytest.approx(evaluation["metrics"]["fcd"], rel=1e-5)
  with open(report["plot"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert sorted(os.listdir(f"{workdir}/eval")) == ["metrics.csv", "metrics.png"]  # Nothing half-written left.


def test_best_evaluates_the_best_checkpoint_even_in_a_moved_workdir(run_cfg, tmp_path):
  workdir = _copy(run_cfg, tmp_path)
  with pytest.raises(errors.UserError, match="no best checkpoint in .*train with --eval_every"):
    evaluate.evaluate_workdir(workdir, best=True)
  # A best checkpoint of step 2 as the trainer keeps one (checkpoint.Checkpointer.save_best), with G's weights halved
  # so that it is not checkpoints/ckpt-2 under another name, then the workdir moves.
  kept = os.path.relpath(helpers.keep_as_best(workdir, 2, helpers.scale_generators(0.5)), workdir)
  moved = shutil.move(workdir, str(tmp_path / "moved"))
  (best,), evaluator = evaluate.evaluate_workdir(moved, best=True)
  assert best["step"] == 2
  # The same evaluator on step 2's regular checkpoint, then on the best one's files restored by their path.
  run = inference.load(moved, 2)
  step_2 = evaluator(run.generator)
  inference.restore(run.state, f"{moved}/{kept}")
  direct = evaluator(run.generator)
  assert best["metrics"] == pytest.approx(direct, rel=1e-6, abs=1e-9)
  assert abs(best["metrics"]["fcd"] - step_2["fcd"]) > 0.01 * step_2["fcd"], (best["metrics"], step_2)


def test_bad_inputs_are_user_errors(run_cfg, tmp_path):
  with pytest.raises(errors.UserError, match="pass at most one of --step, --all and --best"):
    evaluate.check_selection(_flags("--all", "--step=2"))
  evaluate.check_selection(_flags("--best"))
  with pytest.raises(errors.UserError, match=r"no checkpoint at step 3 in .*; there are: 2, 4$"):
    evaluate.evaluate_workdir(run_cfg.workdir, [3])
  with pytest.raises(errors.UserError, match="flags.txt not found"):
    evaluate.evaluate_workdir(run_cfg.workdir + "/nothing")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(errors.UserError, match="no checkpoint in .*a trained workdir"):
    evaluate.kept_steps(str(empty))
  with pytest.raises(flags.IllegalFlagValueError):
    _flags("--num=3")


def test_overrides_are_the_evaluation_flags_given():
  assert evaluate.eval_overrides(_flags("--workdir=/w", "--data_dir=/d")) == {"data_dir": "/d"}
  assert evaluate.eval_overrides(_flags("--eval_cache_dir=/c", "--inception_weights=/i.h5", "--num=50")) == {
      "eval_cache_dir": "/c", "inception_weights": "/i.h5", "eval_num": 50}
  assert evaluate.eval_overrides(_flags()) == {}


def test_the_report_is_strict_json_with_nan_as_null():
  # A class without held-out images has accuracy NaN, which json.dumps would print as NaN: not JSON.
  report = {"label_accuracy/2": float("nan"), "fcd": 1.5, "evaluations": [{"metrics": {"x": float("nan")}}]}
  text = json.dumps(evaluate._nan_to_null(report), allow_nan=False)
  assert json.loads(text) == {"label_accuracy/2": None, "fcd": 1.5, "evaluations": [{"metrics": {"x": None}}]}


def test_write_csv_leaves_missing_metrics_empty(tmp_path):
  path = str(tmp_path / "sub" / "m.csv")
  evaluate.write_csv(path, [{"step": 1, "fcd": 2.0}, {"step": 2, "fcd": 1.5, "fid": 30.0}])
  with open(path, encoding="utf-8") as f:
    assert f.read().splitlines() == ["step,fcd,fid", "1,2,", "2,1.5,30"]


@pytest.mark.slow
def test_the_command_line_matches_the_library(run_cfg, tmp_path):
  """The real entry point (its bad input: test_the_command_line_fails_in_one_line, in this process)."""
  workdir = _copy(run_cfg, tmp_path)
  proc = subprocess.run([subprocs.PYTHON, "-m", "gan_dist.evaluate", f"--workdir={workdir}", "--all"],
                        cwd=subprocs.REPO, env=subprocs.env(tmp_path), capture_output=True, text=True,
                        timeout=subprocs.WATCHDOG_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout[proc.stdout.index("{"):])
  together, _ = evaluate.evaluate_workdir(workdir, [2, 4])
  assert [e["step"] for e in report["evaluations"]] == [2, 4]
  for printed, computed in zip(report["evaluations"], together):
    assert printed["metrics"] == pytest.approx(computed["metrics"], rel=1e-6, abs=1e-9)


def test_the_command_line_fails_in_one_line(run_cfg, monkeypatch, capsys):
  """What `python -m gan_dist.evaluate --step=3` does once started (cli.run: cli.guard(evaluate.main)), in this
  process: exit code 2, one line on stderr, nothing on stdout."""
  fv = _flags(f"--workdir={run_cfg.workdir}", "--step=3")
  monkeypatch.setattr(cli, "FLAGS", fv)
  assert cli.guard(evaluate.main)(["evaluate"]) == errors.EXIT_USAGE
  out, err = capsys.readouterr()
  assert out == ""
  assert err.strip().splitlines()[-1].startswith("error: no checkpoint at step 3 in ")
  assert len([l for l in err.splitlines() if l.startswith("error: ")]) == 1 and "Traceback" not in err


def test_all_refuses_an_eval_folder_it_could_not_write_before_evaluating(run_cfg, tmp_path, monkeypatch, capsys):
  workdir = _copy(run_cfg, tmp_path)
  (tmp_path / "workdir" / "eval").write_text("mine")  # A file where --all writes its CSV and plot.
  monkeypatch.setattr(evaluate, "evaluate_workdir", lambda *a, **k: pytest.fail("evaluated although refused"))
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", "--all"))
  assert cli.guard(evaluate.main)(["evaluate"]) == errors.EXIT_USAGE
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f"error: {workdir}/eval (where --all writes its CSV and plot) is a file, not a directory")


@pytest.mark.slow
def test_the_trainers_tensorboard_figures_are_what_evaluate_computes_for_the_same_checkpoint(tmp_path, one_device):
  """--eval_every scores the EMA generator just before saving; evaluate restores it (its BatchNorm statistics from
  the checkpoint) and must score the same samples alike, floors included (TensorBoard keeps float32)."""
  cfg = helpers.config(tmp_path, arch="dcgan", data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=64),
                       eval_cache_dir=str(tmp_path / "cache"), eval_num=40, eval_every=2, checkpoint_every=2,
                       train_steps=4, max_to_keep=5, ema_decay=0.9)
  train.run(cfg, one_device)
  scalars = figures.read_scalars(f"{cfg.workdir}/tensorboard")
  results, evaluator = evaluate.evaluate_workdir(cfg.workdir, [2, 4])
  assert [r["step"] for r in results] == [2, 4]
  for result in results:
    for name, value in result["metrics"].items():
      logged = dict(scalars[f"eval/{name}"])[result["step"]]
      assert logged == pytest.approx(value, rel=1e-5, abs=1e-7), (result["step"], name)
  for name, value in evaluator.floors.items():
    assert scalars[f"eval_floor/{name}"][-1][1] == pytest.approx(value, rel=1e-5, abs=1e-7), name
