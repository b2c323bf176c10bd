#!/usr/bin/env bash
# Runs N gan_dist workers on this machine under MultiWorkerMirroredStrategy, as a real cluster would.
#
# Usage (from the repository root):
#   launch/local.sh N [FLAGS...]
#   launch/local.sh 2 --flagfile=configs/dcgan.cfg --data_dir=../shared/data/mnist --workdir=/tmp/mw --train_steps=20
#
# Each worker is `python -m gan_dist.main --strategy=multi_worker_mirrored FLAGS...` with a TF_CONFIG naming N free
# localhost ports and its own index. Worker 0 is the chief. Every line a worker prints is shown here prefixed with
# "[worker i]" and appended, unprefixed, to <workdir>/logs/worker_<i>.log (--workdir given; a resumed run adds to
# the same logs) or to a log in a temporary folder (printed). If a worker fails, the others are stopped (a worker
# left alone would wait forever in a collective) and this script exits with that worker's status and a message
# naming it; it exits 0 when every worker succeeds.
#
# Environment:
#   PYTHON     interpreter to run (default: python3, else python).
#   LOG_DIR    where to keep the worker logs (default: <workdir>/logs).
#   GRACE_S    seconds the other workers get to exit after SIGTERM before SIGKILL (default: 10).
#   GPUS_PER_WORKER=k  give worker i the GPUs i*k ... i*k+k-1 through CUDA_VISIBLE_DEVICES (default: unset, every
#              worker sees every GPU, which suits CPU runs only: two processes cannot share a GPU under NCCL).

set -uo pipefail

usage() {
  echo "usage: $0 NUM_WORKERS [gan_dist flags...]   (e.g. $0 2 --flagfile=configs/dcgan.cfg --workdir=/tmp/run)" >&2
  exit 2
}

[[ $# -ge 1 && "$1" =~ ^[1-9][0-9]*$ ]] || usage
num_workers=$1
shift

if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=$(command -v python3 || command -v python) || { echo "local.sh: no python3 or python on PATH" >&2; exit 2; }
fi
grace_s=${GRACE_S:-10}
gpus_per_worker=${GPUS_PER_WORKER:-}
if [[ -n "$gpus_per_worker" && ! "$gpus_per_worker" =~ ^[1-9][0-9]*$ ]]; then
  echo "local.sh: GPUS_PER_WORKER=$gpus_per_worker is not a positive integer" >&2
  exit 2
fi

# The workdir, as gan_dist would parse it (--workdir=W or --workdir W; the last one wins).
workdir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --workdir=*) workdir="${args[i]#--workdir=}" ;;
    --workdir) workdir="${args[i + 1]:-}" ;;
  esac
done
if [[ -n "${LOG_DIR:-}" ]]; then
  log_dir=$LOG_DIR
elif [[ -n "$workdir" ]]; then
  log_dir="$workdir/logs"
else
  log_dir=$(mktemp -d "${TMPDIR:-/tmp}/gan_dist_logs.XXXXXX")
fi
mkdir -p "$log_dir" || exit 2

# Free ports: bind port 0 for each worker at once (so they differ), read the ports, release them. Another process
# could take one before TensorFlow binds it; that fails loudly at startup, it never trains wrongly.
ports=$("$PYTHON" - "$num_workers" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
  s.bind(("localhost", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
) || { echo "local.sh: could not pick free ports" >&2; exit 2; }
read -r -a ports <<< "$ports"
workers_json=$(printf '"localhost:%s",' "${ports[@]}")
workers_json="[${workers_json%,}]"

echo "local.sh: starting $num_workers worker(s) on localhost ports ${ports[*]}; logs in $log_dir"

pids=()
cleanup_started=0

stop_workers() {
  # Stops every worker still running: SIGTERM, then SIGKILL after the grace period. Each worker runs in its own
  # process group (setsid), so this also reaches anything a worker started.
  local pid deadline
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  done
  deadline=$((SECONDS + grace_s))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  done
}

on_signal() {
  ((cleanup_started)) && return
  cleanup_started=1
  echo "local.sh: interrupted; stopping all workers" >&2
  stop_workers
  exit 130
}
trap on_signal INT TERM

for ((i = 0; i < num_workers; i++)); do
  tf_config="{\"cluster\": {\"worker\": $workers_json}, \"task\": {\"type\": \"worker\", \"index\": $i}}"
  log="$log_dir/worker_$i.log"
  gpu_env=()
  if [[ -n "$gpus_per_worker" ]]; then
    gpu_env=(CUDA_VISIBLE_DEVICES="$(seq -s, $((i * gpus_per_worker)) $((i * gpus_per_worker + gpus_per_worker - 1)))")
  fi
  echo "==== local.sh $(date '+%F %T'): worker $i of $num_workers, TF_CONFIG=$tf_config" >> "$log"
  # setsid: a process group per worker, so stopping one worker stops all it started. The worker's output goes to its
  # log file and, prefixed, to our stdout; `exec` makes $! the python process itself.
  env "${gpu_env[@]}" TF_CONFIG="$tf_config" PYTHONUNBUFFERED=1 setsid bash -c 'exec "$@"' worker \
      "$PYTHON" -m gan_dist.main \
      --strategy=multi_worker_mirrored "$@" \
      > >(tee -a "$log" | sed -u "s/^/[worker $i] /") 2>&1 &
  pids+=($!)
  echo "local.sh: worker $i pid ${pids[i]} ${gpu_env[*]} TF_CONFIG=$tf_config"
done

# Poll rather than `wait -n`: we must know WHICH worker ended, and react to the first failure at once.
remaining=$num_workers
declare -A done_workers=()
while ((remaining > 0)); do
  for ((i = 0; i < num_workers; i++)); do
    [[ -n "${done_workers[$i]:-}" ]] && continue
    pid=${pids[i]}
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"
    rc=$?
    done_workers[$i]=$rc
    remaining=$((remaining - 1))
    if ((rc != 0)); then
      cleanup_started=1
      echo "local.sh: worker $i (pid $pid) failed with exit status $rc; stopping the other workers." \
           "Its log: $log_dir/worker_$i.log" >&2
      stop_workers
      wait 2>/dev/null
      echo "local.sh: FAILED: worker $i exited with status $rc" >&2
      exit "$rc"
    fi
    echo "local.sh: worker $i finished"
  done
  ((remaining > 0)) && sleep 0.5
done
wait 2>/dev/null  # The log pipes.
echo "local.sh: all $num_workers worker(s) succeeded"
exit 0
