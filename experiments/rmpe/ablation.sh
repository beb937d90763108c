#!/usr/bin/env bash
# RMPE's ablation on the embedded synthetic data at a CPU budget (experiments/rmpe/README.md).
#   bash experiments/rmpe/ablation.sh [out_dir] [steps]
# 1. fits PGPG on the synthetic training split (its people and simulated detections);
# 2. trains the five rows of conf/rmpe_ablation/ as one multirun, each evaluated on the
#    detector's boxes with parametric pose NMS;
# 3. evaluates the full row again without pose NMS (task=postprocess on its cached poses) and on
#    ground-truth boxes (the oracle row);
# 4. writes the table (experiments/rmpe/ablation_table.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-logs/rmpe_ablation}
STEPS=${2:-500}
PY=${PY:-.venv/bin/python}
# The experiment copies the parallel SPPE at step 200.
BUDGET=(trainer.max_epochs=-1 "++trainer.max_steps=$STEPS" trainer.check_val_every_n_epoch=null
        "+trainer.val_check_interval=$((STEPS / 2))")
$PY run.py task=fit_pgpg hydra.run.dir="$OUT/pgpg" print_config=false
$PY run.py -m experiment=rmpe_res18_synthetic-128x96 data.pgpg_file="$OUT/pgpg/pgpg.json" \
  rmpe_ablation=full,no_sstn,no_parallel,no_pgpg,jitter "${BUDGET[@]}" \
  hydra.sweep.dir="$OUT/rows" print_config=false
FULL="$OUT/rows/0"
$PY run.py task=postprocess raw_predictions="$FULL" model.postprocess.nms=none \
  hydra.run.dir="$OUT/no_nms" print_config=false
$PY run.py task=eval experiment=rmpe_res18_synthetic-128x96 rmpe_ablation=full \
  data.pgpg_file="$OUT/pgpg/pgpg.json" data.box_source=gt ckpt_path="$FULL/checkpoints/last.ckpt" \
  hydra.run.dir="$OUT/oracle" print_config=false
$PY experiments/rmpe/ablation_table.py "$OUT"
