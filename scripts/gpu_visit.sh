#!/usr/bin/env bash
# Runs on a GPU machine (Python 3.12 with torch, no network), from the repository root, with the folders
# of .gpu/ that scripts/gpu_bundle.py prepared here carried along. Every command first installs the carried
# wheels into /tmp/seg-site and unpacks the carried data parts under /tmp/seg-data (both stay while the
# machine is held, so a dataset can arrive in parts over consecutive commands), then:
#
#   bash scripts/gpu_visit.sh stage
#       nothing more (a data part carried ahead of the command that needs the whole dataset)
#   bash scripts/gpu_visit.sh check [SECONDS]
#       the CUDA tests (pytest -m cuda: the sync-debug checks of every strategy and loss term, bf16 and
#       channels_last), the GPU benchmark section, then the whole suite in what is left of SECONDS (default 480)
#   bash scripts/gpu_visit.sh grid EXPERIMENT RUNS JOBS [SECONDS]
#       the next RUNS unfinished runs of EXPERIMENT's full profile (compare.py --limit RUNS), JOBS at a time
#       sharing the GPU, stopped after SECONDS (default 540; a run cut off is lost, the finished ones kept)
#
# What comes back, under $OUT (default /tmp/seg-out): machine.txt, the logs, gpu-benchmark.md, and for a
# grid results-<experiment>.tgz (the experiment's results folder: run summaries, test evaluations, the
# manifest; unpack it into experiments/results/ of the repository) and metrics-<experiment>.tgz (each
# run's metrics.jsonl and config.yaml). Exit code: that of the last step that failed, else 0.
set -uo pipefail

OUT=${OUT:-/tmp/seg-out}
SITE=/tmp/seg-site
DATA=/tmp/seg-data
mkdir -p "$OUT" "$SITE" "$DATA"
status=0

say() { echo "gpu_visit: $*" | tee -a "$OUT/visit.log"; }

install_wheels() {
    local folder stamp
    for folder in .gpu/whl .gpu/whl-tracking; do
        [ -d "$folder" ] || continue
        stamp="$SITE/.$(basename "$folder").$(ls "$folder" | md5sum | cut -c1-12)"
        [ -f "$stamp" ] && continue
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$folder"/*.whl || { say "installing $folder failed"; exit 1; }
        touch "$stamp"
    done
}

setup() {
    install_wheels
    export PYTHONPATH="$SITE:$PWD" SEG_SHARED_DATA="$DATA" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 WANDB_SILENT=true
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
        python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
        echo "$(nproc) CPUs"
    } >"$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt"
    local parts=(.gpu/data/*)
    if [ -e "${parts[0]}" ]; then
        python3 -m seg.data.packing unpack "${parts[@]}" --into "$DATA" 2>&1 | tee -a "$OUT/visit.log"
        data_status=${PIPESTATUS[0]}
    else
        data_status=0
    fi
}

# The dataset folder an experiment trains on (its base config's data.root, under SEG_SHARED_DATA).
dataset_of() {
    python3 - "$1" <<'EOF'
import sys
from pathlib import Path
from seg.config import expand_path, load_config
from seg.experiments.experiment import load_experiment
experiment = load_experiment(sys.argv[1])
print(Path(expand_path(load_config(experiment.base).data.root)).name)
EOF
}

check() {
    local seconds=${1:-480} start=$SECONDS left
    say "CUDA tests (pytest -m cuda)"
    timeout 180 python3 -m pytest -q -rs -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/cuda-tests.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    say "GPU benchmark"
    timeout 300 python3 scripts/benchmark.py --only gpu 2>&1 | tee "$OUT/gpu-benchmark.md"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    left=$((seconds - (SECONDS - start)))
    if [ "$left" -gt 60 ]; then
        say "the whole suite, $left s at most"
        OMP_NUM_THREADS=4 timeout "$left" python3 -m pytest -q -rs -p no:cacheprovider --durations=10 tests \
            >"$OUT/suite.log" 2>&1
        [ "$?" = 0 ] || status=1
        tail -n 25 "$OUT/suite.log"
    else
        say "no time left for the whole suite"
    fi
}

grid() {
    local experiment=$1 runs=$2 jobs=$3 seconds=${4:-540} name dataset
    name=$(basename "$experiment" .yaml)
    dataset=$(dataset_of "$experiment") || { say "$experiment: cannot read it"; exit 2; }
    if [ ! -d "$DATA/$dataset" ] || [ "$data_status" != 0 ]; then
        say "$dataset: not all of it is here (carry its parts: stage the first, then this command with the last)"
        exit 2
    fi
    say "$name: the next $runs unfinished runs of the full profile, $jobs at a time, $seconds s at most"
    # data.num_workers stays the same on every visit (the manifest records the command); augmentation is
    # seeded per item, so the worker count changes no number.
    timeout --signal=INT --kill-after=30 "$seconds" python3 scripts/compare.py --experiment "$experiment" \
        --profile full --jobs "$jobs" --limit "$runs" --no-progress \
        --set logging.wandb.mode=disabled --set data.num_workers=3 --set data.keep_decoded=true \
        2>&1 | tee "$OUT/grid-$name.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    pkill -INT -f "seg.apps.train" 2>/dev/null && sleep 5
    tar -czf "$OUT/results-$name.tgz" -C experiments/results "$name-full"
    (cd runs && tar -czf "$OUT/metrics-$name.tgz" "$name"-full-*/metrics.jsonl "$name"-full-*/config.yaml \
        "$name"-full-*/compare.log 2>/dev/null)
    say "results: $(tar -tzf "$OUT/results-$name.tgz" | grep -c '/runs/.*[0-9].json$') run summaries in results-$name.tgz"
}

setup
case "${1:-}" in
    stage) status=0 ;;
    check) shift; check "$@" ;;
    grid) shift; [ "$#" -ge 3 ] || { say "usage: grid EXPERIMENT RUNS JOBS [SECONDS]"; exit 2; }; grid "$@" ;;
    *) say "usage: bash scripts/gpu_visit.sh stage | check [SECONDS] | grid EXPERIMENT RUNS JOBS [SECONDS]"; exit 2 ;;
esac
exit "$status"
