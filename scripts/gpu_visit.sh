#!/usr/bin/env bash
# Runs on a GPU machine (Python 3.12 with torch, no network), from the repository root, with the folders
# of .gpu/ that scripts/gpu_bundle.py prepared here carried along; gpu_bundle.py prints each command with
# SEG_SOURCE_COMMIT and SEG_SOURCE_DIRTY in front (the copy has no .git: the runs record that commit). Every command first installs the carried
# wheels into /tmp/seg-site and unpacks the carried data parts under /tmp/seg-data (both stay while the
# machine is held, so a dataset can arrive in parts over consecutive commands), then:
#
#   bash scripts/gpu_visit.sh stage
#       nothing more (a data part carried ahead of the command that needs the whole dataset)
#   bash scripts/gpu_visit.sh check [SECONDS]
#       the CUDA tests (pytest -m cuda: the sync-debug checks of every strategy and loss term, bf16 and
#       channels_last), the GPU benchmark section, a probe of weighting_isbi2012 (when its data came along),
#       then the whole suite in what is left of SECONDS (default 480)
#   bash scripts/gpu_visit.sh probe EXPERIMENT JOBS
#       JOBS runs of EXPERIMENT's full profile at once for 2 epochs (apart from the results): the time per
#       epoch, and how many runs a 540 s grid command holds
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
    python3 -c 'import sys; from pathlib import Path; from seg.apps.gpu_bundle import dataset_of
print(dataset_of(Path(sys.argv[1])))' "$1"
}

# Runs record the commit they came from; this copy has no .git, so the command names it
# (scripts/gpu_bundle.py prints the commands with SEG_SOURCE_COMMIT and SEG_SOURCE_DIRTY set).
source_named() {
    [ -d .git ] || [ -n "${SEG_SOURCE_COMMIT:-}" ]
}

check() {
    local seconds=${1:-480} start=$SECONDS left
    source_named || say "SEG_SOURCE_COMMIT is not set: the tests that read a run's commit will fail"
    say "CUDA tests (pytest -m cuda)"
    timeout 180 python3 -m pytest -q -rs -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/cuda-tests.log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    say "GPU benchmark"
    timeout 300 python3 scripts/benchmark.py --only gpu 2>&1 | tee "$OUT/gpu-benchmark.md"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    if [ -d "$DATA/isbi2012_membrane" ]; then
        probe experiments/weighting_isbi2012.yaml 4
    fi
    left=$((seconds - (SECONDS - start)))
    if [ "$left" -gt 60 ]; then
        # pytest-xdist (on that machine's image) runs it in 8 processes: the suite is safe to split (checked
        # with -n 2 here), and its tests then share the GPU
        local workers=()
        python3 -c "import xdist" 2>/dev/null && workers=(-n 8)
        say "the whole suite, $left s at most ${workers[*]}"
        OMP_NUM_THREADS=2 timeout "$left" python3 -m pytest -q -rs -p no:cacheprovider --durations=10 \
            "${workers[@]}" tests >"$OUT/suite.log" 2>&1
        [ "$?" = 0 ] || status=1
        tail -n 25 "$OUT/suite.log"
    else
        say "no time left for the whole suite"
    fi
}

probe() {
    local experiment=$1 jobs=$2 name
    name=$(basename "$experiment" .yaml)
    say "$name: $jobs runs of its full profile at once for 2 epochs, to size the grid slices"
    rm -rf /tmp/seg-probe /tmp/seg-probe-runs
    timeout 300 python3 scripts/compare.py --experiment "$experiment" --profile full --jobs "$jobs" \
        --limit "$jobs" --no-progress --out /tmp/seg-probe --set run.out_dir=/tmp/seg-probe-runs \
        --set train.epochs=2 --set logging.wandb.mode=disabled --set data.num_workers=3 \
        --set data.keep_decoded=true >"$OUT/probe-$name.log" 2>&1 || status=1
    python3 - "$experiment" "$jobs" <<'EOF' 2>&1 | tee -a "$OUT/probe-$name.log"
import json, math, sys
from pathlib import Path
from seg.experiments.experiment import load_experiment, plan_runs, resolve_configs
experiment, jobs = load_experiment(sys.argv[1]), int(sys.argv[2])
epochs = resolve_configs(experiment, plan_runs(experiment, "full", []))[0].train.epochs
folder = Path("/tmp/seg-probe") / f"{experiment.name}-full" / "runs"
times = [json.loads(p.read_text())["wall_time_per_epoch_s"] for p in folder.glob("*.json") if ".eval-" not in p.name]
if not times:
    sys.exit("probe: no run finished; see the log above")
run_s = max(times) * epochs + 30  # the slowest run, plus start-up and the test evaluation
waves = max(0, math.floor((540 - 30) / run_s))
print(f"probe: {len(times)} runs at once: {max(times):.1f} s per epoch (slowest), {epochs} epochs: about "
      f"{run_s / 60:.1f} min a run; a 540 s command holds {waves} wave(s) of {jobs}: grid ... {waves * jobs} {jobs} 540")
EOF
}

grid() {
    local experiment=$1 runs=$2 jobs=$3 seconds=${4:-540} name dataset
    name=$(basename "$experiment" .yaml)
    source_named || { say "SEG_SOURCE_COMMIT is not set: the runs would record no commit (see gpu_bundle.py)"; exit 2; }
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
    probe) shift; [ "$#" -ge 2 ] || { say "usage: probe EXPERIMENT JOBS"; exit 2; }; probe "$@" ;;
    grid) shift; [ "$#" -ge 3 ] || { say "usage: grid EXPERIMENT RUNS JOBS [SECONDS]"; exit 2; }; grid "$@" ;;
    *) say "usage: bash scripts/gpu_visit.sh stage | check [SECONDS] | probe EXPERIMENT JOBS | grid EXPERIMENT RUNS JOBS [SECONDS]"; exit 2 ;;
esac
exit "$status"
