#!/usr/bin/env bash
# The GPU figures of gan_dist in one short script, for a lent GPU machine whose device time is counted in minutes
# (../shared/gpu/README.md: TensorFlow and its CUDA 12 libraries are carried there first).
#
# Usage, from the repository root on the GPU host, TensorFlow importable:
#   bash benchmarks/gpu_check.sh MNIST_DIR FOLDER128 OUT_DIR [PARTS]
#     MNIST_DIR  the four MNIST IDX .gz files
#     FOLDER128  an image folder of 128x128 images (e.g. bash ../shared/data/avatars/make.sh DIR 200 128)
#     OUT_DIR    logs and one JSON line per measurement (gpu_check.jsonl)
#     PARTS      which measurements, in this order (default all): faces128 dcgan throughput tests
#
# Measured with it: docs/benchmarks.md "One GPU". Tried on an H200 host (16 cores) on 2026-12-04, the four parts took
# 375 s after TensorFlow's install there (29 s); in that run faces128 had 600 steps and hit its limit at step 300.
# Each part has its own time limit, so that one failure leaves the others' figures: the logs keep every line.
#   faces128    configs/faces128.cfg as written (mixed_float16, batch 256, mirrored over the host's GPUs) for 200
#               steps; images/s from the trainer's own log lines, peak GPU memory from TensorFlow's allocator (printed
#               at exit: a run stopped by its time limit has none).
#   dcgan       the README's main job (configs/dcgan.cfg, mirrored) for 1,000 steps: images/s, samples, checkpoint.
#   throughput  benchmarks/throughput.py on the GPU, float32 and mixed_float16: gan_dist's step against the
#               tutorial's, as a ratio measured in one process.
#   tests       the fast test tier on a GPU host: tests/conftest.py hides the GPU (CUDA_VISIBLE_DEVICES=""), so the
#               suite must pass here as on a CPU machine (tests/serve left out: Flask is not on that image).
set -uo pipefail
if [[ $# -lt 3 || $1 == -h || $1 == --help ]]; then  # The usage: this header's comment block.
  sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && exit 0
  exit 2
fi
mnist=$1 faces=$2 out=$3
parts=${4:-faces128 dcgan throughput tests}
# Shorter runs for a check of this script on a CPU (tests/benchmarks/test_smoke.py): STEPS=2 EVERY=1
# EXTRA="--batch_size=16" bash benchmarks/gpu_check.sh MNIST_DIR MNIST_DIR OUT dcgan (EXTRA: flags after the
# config's, so they win; the faces128 part is a GPU's: on 2 CPU cores it outlasts its 200 s limit).
# Each part's own defaults (its steps, its summary interval) are spelled where it runs.
steps=${STEPS:-}
read -r -a extra <<<"${EXTRA:-}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1
has() { [[ " $parts " == *" $1 "* ]]; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU (nvidia-smi failed)"; } | tee "$out/gpu.txt"

# Prints the trainer's images/s log lines and appends one JSON line: the median images/s after the first window
# (the first one holds tracing).
summarize() {  # NAME LOG RC
  grep -m1 '^tensorflow ' "$2"; grep -E 'images/s|Error|error:' "$2" | tail -n 12
  python3 - "$1" "$2" "$3" "$out" <<'EOF'
import json, re, statistics, sys
name, log, rc, out = sys.argv[1:]
text = open(log).read()
ips = [float(x) for x in re.findall(r"([0-9.]+) images/s", text)]
peak = re.findall(r"peak GPU memory ([0-9.]+) GiB", text)
rec = {"part": name, "rc": int(rc), "images_per_s_windows": ips,
       "images_per_s_median_after_first": statistics.median(ips[1:]) if len(ips) > 1 else None,
       "peak_gpu_gib": float(peak[-1]) if peak else None, "gpu": open(f"{out}/gpu.txt").read().strip()}
print(json.dumps(rec))
open(f"{out}/gpu_check.jsonl", "a").write(json.dumps(rec) + "\n")
EOF
}

# Runs gan_dist.main with TensorFlow's version and GPUs printed first and its peak GPU memory at exit.
train() {  # NAME SECONDS ARGS...
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout -k 10 "$secs" python3 -c '
import atexit, sys
import tensorflow as tf
print("tensorflow", tf.__version__, tf.config.list_physical_devices("GPU"), flush=True)
def peak():
  if tf.config.list_physical_devices("GPU"):
    print("peak GPU memory %.2f GiB" % (tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30), flush=True)
atexit.register(peak)
from gan_dist import main
sys.argv = ["gan_dist.main"] + sys.argv[1:]
main.run()
' "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc $rc in $((SECONDS - t0)) s"
  summarize "$name" "$out/$name.log" "$rc"
}

if has faces128; then
  train faces128 200 --strategy=mirrored --flagfile=configs/faces128.cfg --data_dir="$faces" --workdir="$out/work_faces128" \
    --train_steps=${steps:-200} --summary_every=${EVERY:-50} --sample_every=${steps:-200} --checkpoint_every=${steps:-200} "${extra[@]}"
fi
if has dcgan; then
  train dcgan 110 --strategy=mirrored --flagfile=configs/dcgan.cfg --data_dir="$mnist" --workdir="$out/work_dcgan" \
    --train_steps=${steps:-1000} --summary_every=${EVERY:-100} --sample_every=${steps:-1000} --checkpoint_every=${steps:-1000} "${extra[@]}"
  ls "$out/work_dcgan"
fi
if has throughput; then
  for p in float32 mixed_float16; do
    timeout -k 10 80 python3 benchmarks/throughput.py --strategy=mirrored --precision=$p --data_dir="$mnist" \
      --seconds=3 --repeats=3 --out="$out/gpu_check.jsonl" >"$out/throughput_$p.log" 2>&1
    echo "== throughput $p: rc $?"; grep '^{' "$out/throughput_$p.log" | tail -1 | cut -c1-600
  done
fi
if has tests; then
  t0=$SECONDS
  timeout -k 10 120 python3 -m pytest -q -n 8 -m "not slow" -p no:cacheprovider --ignore=tests/serve tests \
    >"$out/tests.log" 2>&1
  echo "== tests: rc $? in $((SECONDS - t0)) s"; tail -n 8 "$out/tests.log"
fi
