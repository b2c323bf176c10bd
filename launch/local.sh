#!/usr/bin/env bash
# Runs N gan_dist workers on this machine under MultiWorkerMirroredStrategy, as a real cluster would.
#
# Usage (from the repository root):
#   launch/local.sh N [FLAGS...]
#   launch/local.sh 2 --flagfile=configs/dcgan.cfg --data_dir=../shared/data/mnist --workdir=/tmp/mw --train_steps=20
#
# Each worker is `python -m gan_dist.main FLAGS... --strategy=multi_worker_mirrored --cluster=tf_config` with a
# TF_CONFIG naming N free localhost ports and its own index. The launcher's own flags come LAST, so that neither a
# flagfile nor an argument can override them (absl: the last value wins). Worker 0 is the chief. Every line a worker
# prints is shown here prefixed with "[worker i]" and appended, unprefixed, to <workdir>/logs/worker_<i>.log
# (--workdir given and local, read as gan_dist reads it, flagfiles included: launch/flags.sh; a resumed run adds to
# the same logs) or to a log in a local temporary folder (printed; also when the workdir is remote, e.g. gs://). A
# flagfile that cannot be read is refused here (exit 2) before anything starts. If a worker fails, the others are
# stopped (a worker left alone would wait in a collective until its peer timeout) and this script exits with that
# worker's status and a message naming it; it exits 0 when every worker succeeds. A refused run (a worker exits 2:
# bad flags or data, found before anything was written) leaves the workdir as it was: the script removes the log
# files it created, what it appended to existing ones, and the folders it created for them (if empty).
#
# SIGTERM or SIGINT (Ctrl-C) to this script is passed on to every worker: they finish their current steps, save a
# checkpoint of the same step together and exit with 75; the script then exits 75 too, and rerunning the same
# command continues from that checkpoint. A worker still starting up (importing TensorFlow) ends at once on that
# signal, with nothing to save; the script then exits with its status (130 for SIGINT). A second Ctrl-C, or GRACE_S
# seconds without the workers exiting, kills them. The workers start with SIGINT at its default action, as a command
# typed in a terminal does (a background job of a script would otherwise inherit SIGINT ignored).
#
# Environment:
#   PYTHON     interpreter to run (default: python3, else python).
#   LOG_DIR    where to keep the worker logs (default: <workdir>/logs for a local workdir).
#   GRACE_S    seconds the workers get to save and exit after SIGTERM/SIGINT before SIGKILL (default: 120).
#   FAILED_GRACE_S  seconds the other workers get to exit after SIGTERM when one worker failed, before SIGKILL
#              (default: 10; they save nothing, their peer is gone).
#   GPUS_PER_WORKER=k  give worker i the GPUs i*k ... i*k+k-1 through CUDA_VISIBLE_DEVICES. Unset: the machine's
#              GPUs (nvidia-smi, or CUDA_VISIBLE_DEVICES if set, read as CUDA reads it: up to its first empty or
#              negative entry, so "" and "-1" mean none) are split evenly over the workers; refused when there are
#              fewer GPUs than workers, or fewer than N*k. No GPUs: every worker runs on the CPU.

set -uo pipefail

# shellcheck source=launch/flags.sh
source "$(dirname "${BASH_SOURCE[0]}")/flags.sh" || exit 2
FLAGS_SH_NAME=local.sh

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
grace_s=${GRACE_S:-120}
failed_grace_s=${FAILED_GRACE_S:-10}
for setting in "GRACE_S=$grace_s" "FAILED_GRACE_S=$failed_grace_s"; do
  if [[ ! "${setting#*=}" =~ ^[0-9]+$ ]]; then
    echo "local.sh: $setting is not a whole number of seconds" >&2
    exit 2
  fi
done
gpus_per_worker=${GPUS_PER_WORKER:-}
if [[ -n "$gpus_per_worker" && ! "$gpus_per_worker" =~ ^[1-9][0-9]*$ ]]; then
  echo "local.sh: GPUS_PER_WORKER=$gpus_per_worker is not a positive integer" >&2
  exit 2
fi

# The GPUs of this machine, by index: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list (none without a driver).
# CUDA reads CUDA_VISIBLE_DEVICES up to its first invalid entry: "-1" (a common way to hide every GPU) or "" is none.
gpu_ids=()
if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then
  IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
  for id in "${visible[@]}"; do
    id=${id//[[:space:]]/}
    [[ -z "$id" || "$id" == -* ]] && break
    gpu_ids+=("$id")
  done
elif command -v nvidia-smi > /dev/null 2>&1; then
  mapfile -t gpu_ids < <(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null | tr -d ' ')
fi
num_gpus=${#gpu_ids[@]}
if ((num_gpus > 0)); then
  if [[ -z "$gpus_per_worker" ]]; then
    if ((num_gpus < num_workers)); then
      echo "local.sh: $num_workers workers but only $num_gpus GPU(s): two workers cannot share a GPU under NCCL;" \
           "start at most $num_gpus workers (or --strategy=mirrored in one process)" >&2
      exit 2
    fi
    gpus_per_worker=$((num_gpus / num_workers))
    ((num_gpus % num_workers)) && echo "local.sh: $num_gpus GPUs do not split evenly over $num_workers workers;" \
        "each gets $gpus_per_worker, $((num_gpus % num_workers)) stay idle" >&2
  elif ((gpus_per_worker * num_workers > num_gpus)); then
    echo "local.sh: GPUS_PER_WORKER=$gpus_per_worker for $num_workers workers needs" \
         "$((gpus_per_worker * num_workers)) GPUs; this machine has $num_gpus" >&2
    exit 2
  fi
elif [[ -n "$gpus_per_worker" ]]; then
  if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then
    echo "local.sh: GPUS_PER_WORKER=$gpus_per_worker but no GPU is visible (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES)" >&2
  else
    echo "local.sh: GPUS_PER_WORKER=$gpus_per_worker but this machine has no GPU (nvidia-smi finds none)" >&2
  fi
  exit 2
fi

# The workdir, as gan_dist will parse it: the last --workdir wins, those in flagfiles included (launch/flags.sh).
workdir=$(flag_value workdir "$@") || exit 2

# What this script creates, so that a refused run can take it back (undo_logs): the folders up to the log directory
# that did not exist (deepest first), and each log file's size before it (-1: it did not exist).
created_dirs=()
declare -A log_sizes=()
log_dir=""
if [[ -n "${LOG_DIR:-}" ]]; then
  log_dir=$LOG_DIR
elif [[ -n "$workdir" && "$workdir" != *://* ]]; then
  log_dir="$workdir/logs"
fi
if [[ -n "$log_dir" ]]; then
  dir=${log_dir%/}
  while [[ -n "$dir" && ! -e "$dir" && ! -L "$dir" ]]; do
    created_dirs+=("$dir")
    [[ "$dir" == */* ]] || break
    dir=${dir%/*}
  done
  mkdir -p "$log_dir" || exit 2
else
  log_dir=$(mktemp -d "${TMPDIR:-/tmp}/gan_dist_logs.XXXXXX") || exit 2
  created_dirs=("$log_dir")
fi

undo_logs() {
  # The logs as they were before this script: what it appended cut off, the files and folders it created removed.
  local log size dir
  for log in "${!log_sizes[@]}"; do
    size=${log_sizes[$log]}
    if [[ "$size" == -1 ]]; then
      rm -f -- "$log"
    else
      truncate -s "$size" -- "$log"
    fi
  done
  for dir in "${created_dirs[@]}"; do
    rmdir -- "$dir" 2>/dev/null || break  # Not empty: something else wrote there; keep it (and its parents).
  done
}

# Free ports: bind port 0 for each worker at once (so they differ), read the ports, release them. Another process
# could take one before TensorFlow binds it; that fails loudly at startup, it never trains wrongly.
ports=$("$PYTHON" - "$num_workers" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
  s.bind(("localhost", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
) || { echo "local.sh: could not pick free ports" >&2; undo_logs; exit 2; }
read -r -a ports <<< "$ports"
workers_json=$(printf '"localhost:%s",' "${ports[@]}")
workers_json="[${workers_json%,}]"

echo "local.sh: starting $num_workers worker(s) on localhost ports ${ports[*]}; logs in $log_dir"

pids=()
log_pids=()
cleanup_started=0
stop_signal=""

kill_workers() {
  # SIGKILL to every worker's process group (setsid), which also reaches anything a worker started.
  local pid
  for pid in "${pids[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  done
}

stop_workers() {
  # Stops every worker still running: SIGTERM (each saves nothing: its peers are gone), SIGKILL after a short grace.
  local pid deadline
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  done
  deadline=$((SECONDS + failed_grace_s))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  done
  kill_workers
}

on_signal() {
  local sig=$1
  if [[ -n "$stop_signal" ]]; then
    # A second signal: stop now.
    echo "local.sh: $sig again; killing all workers without waiting for their checkpoint" >&2
    kill_workers
    exit 130
  fi
  stop_signal=$sig
  echo "local.sh: $sig: asking every worker to save a checkpoint and exit (up to ${grace_s}s)" >&2
  local pid
  for pid in "${pids[@]}"; do
    kill "-$sig" "$pid" 2>/dev/null  # The python process only: it saves, then exits 75.
  done
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

# A background job of a non-interactive shell starts with SIGINT ignored, and a program that starts with a signal
# ignored keeps it so until it sets a handler (a bash cannot even trap it): a worker still importing TensorFlow would
# lose the SIGINT this script passes on, and the script would wait out GRACE_S. So every worker starts with SIGINT at
# its default action: through coreutils' env --default-signal (8.31 and later), else through the interpreter.
if env --default-signal=INT true 2>/dev/null; then
  default_sigint=(env --default-signal=INT)
else
  default_sigint=("$PYTHON" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])')
fi

for ((i = 0; i < num_workers; i++)); do
  tf_config="{\"cluster\": {\"worker\": $workers_json}, \"task\": {\"type\": \"worker\", \"index\": $i}}"
  log="$log_dir/worker_$i.log"
  gpu_env=()
  if [[ -n "$gpus_per_worker" ]]; then
    share=("${gpu_ids[@]:$((i * gpus_per_worker)):$gpus_per_worker}")
    gpu_env=(CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${share[*]}")")
  fi
  if [[ -f "$log" ]]; then
    log_sizes[$log]=$(stat -c %s -- "$log")
  else
    log_sizes[$log]=-1
  fi
  echo "==== local.sh $(date '+%F %T'): worker $i of $num_workers, TF_CONFIG=$tf_config" >> "$log"
  # The worker's output goes to its log file and, prefixed, to our stdout, through a pipe opened here so that its pid
  # is known: the script waits for it at the end (a plain `wait` does not wait for process substitutions, and the
  # workers' last lines would be lost). The pipe ignores SIGINT and SIGTERM (a Ctrl-C reaches our whole process
  # group): it must outlive the workers' last lines.
  exec {log_fd}> >(trap '' INT TERM; tee -a "$log" | sed -u "s/^/[worker $i] /")
  log_pids+=($!)
  # setsid: a process group per worker, so stopping one worker stops all it started; `exec` makes $! the python
  # process itself; default_sigint: SIGINT at its default action (above).
  "${default_sigint[@]}" env "${gpu_env[@]}" TF_CONFIG="$tf_config" PYTHONUNBUFFERED=1 \
      setsid bash -c 'exec "$@"' worker "$PYTHON" -m gan_dist.main "$@" \
      --strategy=multi_worker_mirrored --cluster=tf_config \
      >&"$log_fd" 2>&1 &
  pids+=($!)
  exec {log_fd}>&-  # Only the worker writes to its pipe now: the pipe ends when the worker does.
  echo "local.sh: worker $i pid ${pids[i]} ${gpu_env[*]} TF_CONFIG=$tf_config"
done

# Poll rather than `wait -n`: we must know WHICH worker ended, and react to the first failure at once.
remaining=$num_workers
declare -A done_workers=()
stop_deadline=""
preempted=0
while ((remaining > 0)); do
  if [[ -n "$stop_signal" ]]; then
    [[ -z "$stop_deadline" ]] && stop_deadline=$((SECONDS + grace_s + 1))  # SECONDS is whole seconds: >= GRACE_S
    if ((SECONDS >= stop_deadline)); then
      echo "local.sh: workers still running ${grace_s}s after $stop_signal; killing them" >&2
      kill_workers
      exit 130
    fi
  fi
  for ((i = 0; i < num_workers; i++)); do
    [[ -n "${done_workers[$i]:-}" ]] && continue
    pid=${pids[i]}
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"
    rc=$?
    done_workers[$i]=$rc
    remaining=$((remaining - 1))
    if [[ "$rc" == 75 ]]; then
      preempted=$((preempted + 1))
      echo "local.sh: worker $i stopped after saving a checkpoint, or before training (exit 75)"
      continue
    fi
    if ((rc != 0)); then
      cleanup_started=1
      # Refused: exit 2 (the worker checked its flags and data before writing anything) while no worker got further.
      refused=0
      ((rc == 2 && ${#done_workers[@]} == 1)) && refused=1
      if ((refused)); then
        echo "local.sh: worker $i (pid $pid) refused the run (exit status 2; its error is above); stopping the" \
             "other workers" >&2
      elif [[ -n "$stop_signal" ]] && ((rc > 128)); then
        echo "local.sh: worker $i (pid $pid) ended by a signal (exit status $rc) after SIG$stop_signal, without a" \
             "checkpoint (a worker still connecting to the cluster has nothing to save); stopping the other workers" >&2
      else
        echo "local.sh: worker $i (pid $pid) failed with exit status $rc; stopping the other workers." \
             "Its log: $log_dir/worker_$i.log" >&2
      fi
      stop_workers
      for ((j = 0; j < num_workers; j++)); do
        [[ -n "${done_workers[$j]:-}" ]] && continue
        wait "${pids[j]}"
        other=$?
        ((other == 0 || other == 75)) && refused=0  # That worker got further: keep the logs.
      done
      wait "${log_pids[@]}" 2>/dev/null
      if ((refused)); then
        undo_logs
        echo "local.sh: the run was refused: removed the log lines, files and folders this script wrote; the" \
             "workdir is as it was" >&2
      fi
      echo "local.sh: FAILED: worker $i exited with status $rc" >&2
      exit "$rc"
    fi
    echo "local.sh: worker $i finished"
  done
  ((remaining > 0)) && sleep 0.5
done
wait "${log_pids[@]}" 2>/dev/null  # Every line the workers printed has been shown and logged.
if ((preempted > 0)); then
  echo "local.sh: all $num_workers worker(s) stopped after ${stop_signal:-a stop signal}, with a checkpoint saved or" \
       "before training; rerun the same command to continue"
  exit 75
fi
echo "local.sh: all $num_workers worker(s) succeeded"
exit 0
