#!/usr/bin/env bash
# Screenshot of TensorBoard's HParams table of a folder of runs (docs/hparams.png), in headless Chromium on localhost.
#   bash docs/hparams_screenshot.sh RUNS_DIR [OUT.png]
# Needs Debian's chromium. TensorBoard serves RUNS_DIR through launch/tensorboard.sh on a free local port.
set -euo pipefail
runs=${1:?usage: hparams_screenshot.sh RUNS_DIR [OUT.png]}; out=${2:-docs/hparams.png}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
here=$(cd "$(dirname "$0")/.." && pwd)
PORT=$port "$here/launch/tensorboard.sh" "$runs" > /tmp/hparams_tensorboard.log 2>&1 &
tb=$!
trap 'kill $tb 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://localhost:$port/data/logdir" > /dev/null && break; sleep 1; done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,900 \
  --virtual-time-budget=20000 --screenshot="$out" "http://localhost:$port/#hparams" 2> /dev/null
echo "wrote $out"
