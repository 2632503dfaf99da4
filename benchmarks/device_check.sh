#!/usr/bin/env bash
# GPU check, one short script (docs/benchmarks.md, "On a GPU"):
#   1. every variant through the whole job (fit, test, MLflow) with trainer=gpu, fast dev run;
#   2. host syncs inside a training step (sampler, loss, backward, fused Adam, weight average,
#      scorer) and training-step throughput per variant in 32-bit, bf16 and fp16 autocast;
#   3. the main job's recipe (experiment=cpu_demo, 2,000 steps) for adaptive_attention on the
#      GPU, one job per precision, side by side: wall time, CRPS, oracle ratio, coverage.
# Runs with the machine's own torch and Lightning; wheels of the other requirements are
# installed from WHEELS (a folder of .whl files) when it exists. Logs go to OUT.
#
#   OUT=/tmp/gpu WHEELS=.whl bash benchmarks/device_check.sh
#   # a dry run of the script itself on a CPU:
#   PY=.venv/bin/python TRAINER=cpu DEVICE=cpu PRECISIONS="32-true bf16-mixed" \
#     JOB_ARGS="trainer.max_steps=20 trainer.val_check_interval=10" bash benchmarks/device_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/device-check}
WHEELS=${WHEELS:-.whl}
PY=${PY:-python3}
TRAINER=${TRAINER:-gpu}
DEVICE=${DEVICE:-cuda}
PRECISIONS=${PRECISIONS:-32-true bf16-mixed 16-mixed}
JOB_ARGS=${JOB_ARGS:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -d "$WHEELS" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl \
    || { echo "wheel install failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" || exit 1
VARIANTS=$($PY -c "from anyq.training.config_tree import VARIANTS; print(','.join(VARIANTS))") || exit 1

echo "== 1. fast dev run, trainer=$TRAINER, every variant"
start=$(date +%s)
$PY -m anyq.app.train -m "model=$VARIANTS" trainer=$TRAINER trainer.fast_dev_run=true \
  "paths.mlruns=$OUT/fdr_mlruns" "hydra.sweep.dir=$OUT/fdr_multirun" >"$OUT/fast_dev_run.log" 2>&1
status=$?
echo "exit $status in $(( $(date +%s) - start )) s"
grep -E "test/crps=" "$OUT/fast_dev_run.log"
[ $status -eq 0 ] || tail -25 "$OUT/fast_dev_run.log"

echo "== 2. host syncs and step throughput"
$PY benchmarks/bench_model.py --device $DEVICE --precision bf16 --batch 256 --sync-check --no-search --eval-windows 4096 \
  2>&1 | tee "$OUT/bench_bf16.log"
for precision in 32 16; do
  $PY benchmarks/bench_model.py --device $DEVICE --precision $precision --batch 256 --no-search --eval-windows 0 \
    2>&1 | tee "$OUT/bench_$precision.log" | head -12
done
$PY benchmarks/bench_model.py --device $DEVICE --precision bf16 --batch 2048 --no-search --eval-windows 0 \
  2>&1 | head -12

echo "== 3. the main job's recipe on the GPU, one job per precision side by side"
for precision in $PRECISIONS; do
  ( s=$(date +%s)
    $PY -m anyq.app.train experiment=cpu_demo trainer=$TRAINER trainer.precision=$precision model=adaptive_attention \
      tracking.compare_to_baseline=false trainer.enable_progress_bar=false "paths.mlruns=$OUT/job_$precision" \
      "hydra.run.dir=$OUT/job_$precision/run" $JOB_ARGS >"$OUT/job_$precision.log" 2>&1
    echo "$precision exit $? wall $(( $(date +%s) - s )) s" >>"$OUT/jobs.txt" ) &
done

wait
echo "== 3. results"
cat "$OUT/jobs.txt"
for precision in $PRECISIONS; do
  grep -q "^$precision exit 0" "$OUT/jobs.txt" || tail -15 "$OUT/job_$precision.log"
done
$PY - "$OUT" <<'EOF'
import glob, sys
from mlflow import MlflowClient
keys = ("train_steps", "best_step", "train_seconds", "test/crps", "test/oracle_ratio", "test/coverage-0.9",
        "test_conformal/crps", "test_conformal/oracle_ratio", "test_conformal/coverage-0.9")
for db in sorted(glob.glob(f"{sys.argv[1]}/job_*/mlflow.db")):
    client = MlflowClient(f"sqlite:///{db}")
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        m = run.data.metrics
        print(db.split("/")[-2], run.info.status, run.data.tags.get("headline"),
              " ".join(f"{k}={m[k]:.4g}" for k in keys if k in m))
EOF
