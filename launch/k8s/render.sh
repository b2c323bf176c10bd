#!/usr/bin/env bash
# Renders the gan_dist Kubernetes templates: replaces each ${PARAM} below with its value from the environment and
# prints the result (YAML documents separated by ---), ready for `kubectl apply -f -`. Pure bash, no kustomize,
# helm or envsubst; only the parameters listed here are replaced (the pod's script keeps its own $VARIABLES).
#
# Usage (from the repository root):
#   IMAGE=registry.example.com/gan_dist:latest PVC=gan-runs WORKDIR=/runs/dcgan NUM_WORKERS=4 GPUS_PER_WORKER=8 \
#     launch/k8s/render.sh | kubectl apply -f -
#   launch/k8s/render.sh launch/k8s/tensorboard.yaml ...   (render only these files; default: both templates)
#
# Parameters (environment variables):
#   IMAGE            required  image holding gan_dist and TensorFlow, the repository at APP_DIR.
#   PVC              required  a ReadWriteMany PersistentVolumeClaim, mounted at /runs in every pod.
#   WORKDIR          required  the run's --workdir, under /runs (e.g. /runs/dcgan).
#   NUM_WORKERS      default 2 worker pods (one MultiWorkerMirroredStrategy worker each; pod 0 is the chief).
#   GPUS_PER_WORKER  default 1 (nvidia.com/gpu limit of each pod; 0 trains on the CPU).
#   ARGS             default "--flagfile=configs/dcgan.cfg": more gan_dist flags, space-separated, no spaces inside.
#   JOB_NAME         default gan-dist: name of the Job, its Service and pod hostnames (a DNS label).
#   APP_DIR          default /app: the repository root inside the image (the container's working directory).
#   PORT             default 2222: the port each worker's gRPC server listens on.
#   CPU_REQUEST      default 8: CPU cores requested per worker pod (input pipeline and host work).
#   MEMORY_REQUEST   default 32Gi: memory requested (and limited to) per worker pod.
#   SHM_SIZE         default 16Gi: size of the memory-backed /dev/shm of each pod (NCCL needs more than 64 MB).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${JOB_NAME:=gan-dist}" "${NUM_WORKERS:=2}" "${GPUS_PER_WORKER:=1}" "${APP_DIR:=/app}" "${PORT:=2222}"
: "${ARGS:=--flagfile=configs/dcgan.cfg}"
: "${CPU_REQUEST:=8}" "${MEMORY_REQUEST:=32Gi}" "${SHM_SIZE:=16Gi}"
params=(IMAGE PVC WORKDIR NUM_WORKERS GPUS_PER_WORKER ARGS JOB_NAME APP_DIR PORT CPU_REQUEST MEMORY_REQUEST SHM_SIZE)

fail() { echo "render.sh: $*" >&2; exit 2; }
for name in IMAGE PVC WORKDIR; do
  [[ -n "${!name:-}" ]] || fail "set $name (see the header of $0)"
done
[[ "$NUM_WORKERS" =~ ^[1-9][0-9]*$ ]] || fail "NUM_WORKERS=$NUM_WORKERS is not a positive integer"
[[ "$GPUS_PER_WORKER" =~ ^[0-9]+$ ]] || fail "GPUS_PER_WORKER=$GPUS_PER_WORKER is not an integer"
[[ "$PORT" =~ ^[1-9][0-9]*$ ]] || fail "PORT=$PORT is not a port number"
[[ "$CPU_REQUEST" =~ ^[0-9]+(\.[0-9]+|m)?$ ]] || fail "CPU_REQUEST=$CPU_REQUEST is not a CPU quantity (e.g. 8, 500m)"
for name in MEMORY_REQUEST SHM_SIZE; do
  [[ "${!name}" =~ ^[0-9]+(Ki|Mi|Gi|Ti)?$ ]] || fail "$name=${!name} is not a memory quantity (e.g. 32Gi)"
done
[[ "$JOB_NAME" =~ ^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$ ]] || fail "JOB_NAME=$JOB_NAME is not a short DNS label"
[[ "$WORKDIR" == /runs/?* ]] || fail "WORKDIR=$WORKDIR must be under /runs (where the PVC is mounted)"
for name in "${params[@]}"; do
  # Values go into YAML strings and a shell command line as they are: refuse what would need quoting.
  [[ "${!name}" != *[\"\\\$\`\'$'\n']* ]] || fail "$name must not contain quotes, backslashes, \$, \` or newlines"
done

files=("$@")
((${#files[@]})) || files=("$here/gan_dist.yaml" "$here/tensorboard.yaml")
first=1
for file in "${files[@]}"; do
  text=$(<"$file")
  for name in "${params[@]}"; do
    value=${!name}
    text=${text//"\${$name}"/"$value"}
  done
  ((first)) || echo "---"
  first=0
  printf '%s\n' "$text"
done
