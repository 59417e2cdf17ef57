#!/usr/bin/env bash
# The GPU column of docs/benchmarks.md in two calls of the device tool, each well inside its 10-minute limit
# (call them back to back: a machine stays warm only seconds after a call). First, here:
#   bash benchmarks/gpu_bundle.sh
# then through the device tool, with carry [".gpu"]:
#   bash benchmarks/gpu_session.sh 1   # CUDA tests; predict (with its nvJPEG row); transfer          ~6 min
#   bash benchmarks/gpu_session.sh 2   # scratch (cifar10-speedrun, 3 seeds); overhead               ~6 min
# Each step runs under its own time limit, so one that hangs cannot cost the others; the log, the GPU's name
# and the new results JSON come back under $OUT (.gpu/out when run elsewhere).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
mkdir -p "$out"
bash benchmarks/gpu_bundle.sh --install >/dev/null || { echo "no bundle: run benchmarks/gpu_bundle.sh here first"; exit 1; }
export PYTHONPATH=$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
touch "$out/started"

step() {  # step SECONDS COMMAND...: run it under a time limit, log it, say how it ended
    local limit=$1
    shift
    echo "== $*" | tee -a "$out/log.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$out/log.txt"
    echo "== exit ${PIPESTATUS[0]} ($(date +%T))" | tee -a "$out/log.txt"
}

case "${1:-}" in
1)
    step 90 python3 -m pytest -q -p no:cacheprovider tests/test_device_decode.py
    step 240 python3 benchmarks/run.py --case predict --data .gpu/data
    step 200 python3 benchmarks/run.py --case transfer --data .gpu/data --progress lines
    ;;
2)
    step 330 python3 benchmarks/run.py --case scratch --data .gpu/data --no-baseline --repeat 3 --progress lines \
        --set export_int8=false
    step 200 python3 benchmarks/run.py --case overhead
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh 1|2"
    exit 2
    ;;
esac
find benchmarks/results -name '*-gpu.json' -newer "$out/started" -exec cp {} "$out/" \;
rm -f "$out/started"
ls "$out"
