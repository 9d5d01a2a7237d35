#!/usr/bin/env bash
# The GPU benchmark in one command, for an H100/H200 machine with no network (docs/performance.md,
# "GPU benchmark: benchmarks/device_check.sh"). Run from the repository root after `make gpu-wheels` here:
#
#   bash benchmarks/device_check.sh            # on the GPU machine; results in $OUT (default .cache/device-check)
#   bash benchmarks/device_check.sh --smoke    # CPU, tiny layout, dev venv: every phase's plumbing (make test)
#
# It installs the carried wheels (.whl, made by `make gpu-wheels`) into a private directory, records the versions
# actually imported (first, into $OUT/versions.json), then runs each phase under its own timeout; every phase
# rewrites its JSON after each case, so a timeout loses only the case in flight. The phases, most valuable first:
#   prepare    random SD 2.1-shaped checkpoint and tiny VAE (shared by all phases)
#   pipelines  in one process: plain diffusers eager baseline, the server's fast path (each shape's compile time
#              recorded) at 1 and 25 steps with CFG on and off, then the 1-step tiny-VAE case; the fast path
#              saves the compile cache the warm start loads
#   stream     the WebSocket frame stream (compile off: the frames run their own captured graphs)
#   e2e        the server through HTTP, compile and streams off: the server's own overhead per case
#   warmstart  a start with only the compile cache warm (compile on, streams off): seconds to /readyz, then the
#              target cases through HTTP on that compiled server
# and ends with the table against the targets (benchmarks.gpu_report), also written to $OUT/report.txt.
# Everything ends within DEADLINE seconds (default 470) of the start: a phase gets min(its limit, what is left).
# Limits can be changed per phase: LIMIT_PIPELINES=300 bash benchmarks/device_check.sh; POD_SET (below) changes
# the pods' server settings for the run.
set -uo pipefail  # no -e: one failed phase must not stop the ones after it

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
smoke=""
if [[ "${1:-}" == "--smoke" ]]; then
  smoke="--smoke"
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--smoke]" >&2
  exit 2
fi
out="${OUT:-$PWD/.cache/device-check}"
work="${WORK:-/tmp/edge-bench}"
pod="${POD:-.whl/nvidia-pod.json}"
py="${PYTHON:-python3}"
deadline="${DEADLINE:-470}"
report_reserve=15
mkdir -p "$out" "$work" || exit 1
phases="$work/phases.tsv"
: >"$phases"
exec > >(tee "$out/device_check.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1

# limit NAME DEFAULT: LIMIT_<NAME> from the environment, else DEFAULT.
limit() {
  local var="LIMIT_${1^^}"
  var="${var//-/_}"
  echo "${!var:-$2}"
}

# phase NAME SECONDS COMMAND...: run under timeout (the whole process group, so a server it started goes too).
phase() {
  local name="$1" seconds="$2" t0="$SECONDS" rc
  shift 2
  local left=$((deadline - SECONDS - report_reserve))
  ((seconds > left)) && seconds="$left"
  if ((seconds < 10)); then
    echo "=== $name: skipped, ${left}s left before the deadline"
    printf '%s\tskipped\t0\t0\n' "$name" >>"$phases"
    return
  fi
  echo "=== $name (limit ${seconds}s, $((SECONDS))s since start)"
  timeout -k 10 "$seconds" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0))s$( ((rc == 124 || rc == 137)) && echo ' (timed out)')"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$seconds" >>"$phases"
}

if [[ -z "$smoke" ]]; then
  # peft, when installed, wraps diffusers' layers and slows the eager baseline; the server image has none.
  "$py" -m pip uninstall -y -q peft >/dev/null 2>&1
  shopt -s nullglob
  wheels=(.whl/*.whl)
  if ((${#wheels[@]} == 0)); then
    echo "no wheels in .whl: run 'make gpu-wheels' on a machine with network and carry .whl" >&2
    exit 1
  fi
  timeout 90 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "${wheels[@]}" || exit 1
  export PYTHONPATH="$work/site:$PWD"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if [[ ! -f "$pod" ]]; then
    pod="$work/nvidia-pod.json"
    timeout 120 "$py" -m benchmarks.podenv --out "$pod" || exit 1
  fi
fi
if [[ ! -f "$pod" ]]; then
  echo "no $pod: 'make gpu-wheels' renders the pod's server settings next to the wheels" >&2
  exit 1
fi
# The pods' settings with this run's changes (POD_SET, space-separated SERVING_NAME=VALUE; empty: exactly the
# pods'). By default warm-up covers one image per request and compiles without autotuning: the pods warm 1..4
# images with max-autotune-no-cudagraphs, which costs minutes per shape on a fresh machine (a pod pays it once per
# GPU type through the compile cache) and does not fit this window. Every result and the table name the changes.
read -ra pod_set <<<"${POD_SET-SERVING_MAX_IMAGES=1 SERVING_COMPILE_MODE=default}"
timeout 60 "$py" -m benchmarks.podenv --from "$pod" --out "$work/pod-run.json" "${pod_set[@]/#/--set=}" || exit 1
pod="$work/pod-run.json"
# Versions actually imported (carried wheels first on the path), after importing every phase's modules: a missing
# wheel or a broken import stops the run here, before any phase spends its time.
timeout 120 "$py" -m benchmarks.gpu_common "$work" || exit 1
cp "$work/versions.json" "$out/versions.json" || exit 1

common=(--out "$out" --work "$work" --pod "$pod" ${smoke:+"$smoke"})
phase prepare "$(limit prepare 45)" "$py" -c "import sys; from pathlib import Path; \
from benchmarks.gpu_common import ensure_models; print(ensure_models(Path(sys.argv[1]), sys.argv[2] == 'smoke'))" \
  "$work" "${smoke:+smoke}"
phase pipelines "$(limit pipelines 220)" "$py" -m benchmarks.gpu "${common[@]}"
phase stream "$(limit stream 40)" "$py" -m benchmarks.gpu_stream "${common[@]}"
phase e2e "$(limit e2e 50)" "$py" -m benchmarks.gpu_e2e e2e "${common[@]}"
phase warmstart "$(limit warmstart 75)" "$py" -m benchmarks.gpu_e2e warmstart "${common[@]}"
timeout 30 "$py" -m benchmarks.gpu_report "$out" --phases "$phases" --pod "$pod" --write "$out/report.txt"
echo "done in ${SECONDS}s; results in $out"
exec >&- 2>&-
wait "$tee_pid"
