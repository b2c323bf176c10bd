r"""What gan_dist's malloc pad (gan_dist.keep_freed_memory) buys: the same training run with and without it.

Each round trains --config for --steps steps twice, in fresh processes (`python -m gan_dist.main`, new workdirs):
once as gan_dist runs by default (64 MiB kept per malloc arena) and once with GAN_DIST_MALLOC_TOP_PAD=0 (glibc's
defaults), in alternating order so that a noisy machine slows both alike. Per run: the images/s the trainer logs
after its first summary window (which holds the tracing), and the process's page faults, system and user CPU time
and peak RSS (wait4). Medians over --repeats rounds, and their ratios (pad / no pad), in one JSON line.

  python3 benchmarks/malloc_pad.py --data_dir=../shared/data/mnist     # configs/cdcgan_quick.cfg, 300 steps
  python3 benchmarks/malloc_pad.py --config=configs/faces64_cond.cfg --data_dir=FOLDER --steps=120 --summary_every=40
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import throughput  # pylint: disable=g-import-not-at-top  (benchmarks/throughput.py, beside this script)

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The script's flags, on `fv`: FLAGS when run as a script (tests/benchmarks/test_smoke.py calls main in the test
  process, with a FlagValues of its own)."""
  flags.DEFINE_string("config", "configs/cdcgan_quick.cfg", "A flagfile, optionally with flags of its own after '+' "
                      "signs (configs/faces64.cfg+--batch_size=32).", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "The config's data.", flag_values=fv)
  flags.DEFINE_integer("steps", 300, "Training steps per run.", flag_values=fv)
  flags.DEFINE_integer("summary_every", 100, "Steps per logged window; the first window (tracing) is left out.",
                       flag_values=fv)
  flags.DEFINE_integer("repeats", 2, "Rounds (one run of each setting per round); medians are reported.",
                       flag_values=fv)
  flags.DEFINE_multi_string("config_flag", [], "Extra flags for the runs (e.g. --config_flag=--arch=mlp).",
                            flag_values=fv)

_WINDOW = re.compile(r"step (\d+)/\d+ .* ([0-9.]+) images/s")
_SETTINGS = {"pad": None, "no_pad": "0"}  # The value of GAN_DIST_MALLOC_TOP_PAD (None: gan_dist's default).


def _train(setting: str, workdir: str) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("GAN_DIST_MALLOC_TOP_PAD", None)
  if _SETTINGS[setting] is not None:
    env["GAN_DIST_MALLOC_TOP_PAD"] = _SETTINGS[setting]
  command = [sys.executable, "-m", "gan_dist.main", *throughput.config_args(FLAGS.config),
             f"--data_dir={FLAGS.data_dir}", f"--workdir={workdir}", f"--train_steps={FLAGS.steps}",
             f"--summary_every={FLAGS.summary_every}", "--eval_every=0", *FLAGS.config_flag]
  proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  log = proc.stderr.read()
  _, status, usage = os.wait4(proc.pid, 0)
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f"{setting} run failed:\n{log[-3000:]}")
  windows = [(int(step), float(ips)) for step, ips in _WINDOW.findall(log)]
  steady = [ips for step, ips in windows if step > FLAGS.summary_every] or [ips for _, ips in windows]
  return dict(images_per_s=statistics.mean(steady), page_faults=usage.ru_minflt + usage.ru_majflt,
              system_s=usage.ru_stime, user_s=usage.ru_utime, peak_rss_mb=usage.ru_maxrss / 1024)


def main(argv):
  del argv
  runs = {name: [] for name in _SETTINGS}
  root = tempfile.mkdtemp(prefix="malloc_pad_")
  try:
    for round_ in range(FLAGS.repeats):
      order = list(_SETTINGS) if round_ % 2 == 0 else list(reversed(_SETTINGS))
      for name in order:
        runs[name].append(_train(name, os.path.join(root, f"{name}_{round_}")))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  median = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
  result = dict(
      config=FLAGS.config, steps=FLAGS.steps,
      median={name: {k: round(v, 2) for k, v in m.items()} for name, m in median.items()},
      ratio_pad_to_no_pad={k: round(median["pad"][k] / max(median["no_pad"][k], 1e-9), 3) for k in median["pad"]},
      runs={name: [{k: round(v, 2) for k, v in r.items()} for r in rs] for name, rs in runs.items()},
      cpu=throughput.cpu())
  print(json.dumps(result))


if __name__ == "__main__":
  define_flags(FLAGS)
  flags.mark_flag_as_required("data_dir")
  app.run(main, flags_parser=throughput.cli.parse_flags)  # One-line flag errors (exit 2); --help exits 0.
