#!/usr/bin/env bash
# Serves the TensorBoard of a gan_dist run (the chief's events in WORKDIR/tensorboard: losses, D outputs, images/s,
# sample grids).
#
# Usage:
#   launch/tensorboard.sh WORKDIR          then open http://localhost:6006
#   launch/tensorboard.sh runs/            a folder of workdirs: every run side by side, and the HParams tab's
#                                          table and parallel coordinates of their configurations and metrics
#   PORT=6007 HOST=0.0.0.0 launch/tensorboard.sh /shared/runs/dcgan    (reachable from other machines)
#
# Environment:
#   PORT       port to serve on (default: 6006).
#   HOST       address to bind (default: localhost; 0.0.0.0 for all interfaces).
#   DRY_RUN=1  print the command instead of running it.

set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 WORKDIR   (the --workdir of a gan_dist run)" >&2
  exit 2
fi
logdir="${1%/}/tensorboard"
# find -L: a workdir in the folder may be a symbolic link to the run (TensorBoard follows links too), and so may the
# folder itself.
if [[ ! -d "$logdir" && -d "$1" &&
      -n "$(find -L "$1" -mindepth 2 -maxdepth 2 -name tensorboard -type d -print -quit 2> /dev/null)" ]]; then
  logdir="${1%/}"  # A folder of runs: TensorBoard names each run by its path below it.
elif [[ ! -d "$logdir" ]]; then
  # A run that has not logged yet: TensorBoard picks the events up once the chief writes them.
  echo "tensorboard.sh: $logdir does not exist yet (has the run started?); serving it anyway" >&2
fi

if command -v tensorboard > /dev/null; then
  cmd=(tensorboard)
else
  cmd=("${PYTHON:-python3}" -m tensorboard.main)
fi
cmd+=(--logdir "$logdir" --host "${HOST:-localhost}" --port "${PORT:-6006}")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
