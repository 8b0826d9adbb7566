#!/usr/bin/env bash
# Re-make the shipped CPU detector data/checkpoints/detector (`make checkpoints-detector`): record the training and
# held-out images of the default objects, train the `cpu` preset in two runs (1500 steps from scratch, then 1000
# steps from those weights at half the rate: a warm restart), measure it on the held-out images (COCO mAP, recall of
# the ground-truth boxes at IoU 0.5), then put it in place in half precision with its config.json, logs, measures
# and MADE_BY.md. Everything is made in a new folder (DET_WORK, default data/checkpoints/.detector-run-<date>; an
# interrupted run resumes when DET_WORK is given again); the old checkpoint is moved to detector.old. About 10 min
# of recording and 30-40 min of training on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
WORK=${DET_WORK:-data/checkpoints/.detector-run-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$WORK"
export OMP_NUM_THREADS=1 MPLBACKEND=Agg                 # one torch thread beside the data-loader worker
resume() { [ -f "$1/state.pt" ] && echo --resume || true; }
"$BIN/cosypose-nb" record --scenes 1000 --views 1 --resolution 240x320 --seed 1 --workers 0 --no-progress --out "$WORK/train_data"
"$BIN/cosypose-nb" record --scenes 30 --views 4 --resolution 240x320 --seed 2 --split test --workers 0 --no-progress --out "$WORK/heldout_data"
"$BIN/cosypose-nb" train detector --config cpu --data "$WORK/train_data" --objects default --seed 0 --n-steps 1500 \
  --no-rgb-augmentation --checkpoint-every 250 --no-progress --out "$WORK/stage1" $(resume "$WORK/stage1")
"$BIN/cosypose-nb" train detector --config cpu --data "$WORK/train_data" --objects default --seed 1 --init "$WORK/stage1" \
  --n-steps 1000 --lr 0.0005 --warmup-steps 20 --no-rgb-augmentation --checkpoint-every 250 --no-progress \
  --out "$WORK/stage2" $(resume "$WORK/stage2")
new=data/checkpoints/detector.new
rm -rf "$new"; mkdir -p "$new"
"$BIN/python" - "$WORK" "$new" <<'PY'
import json, sys
from pathlib import Path
from cosypose_nb.demo import ship_checkpoint
from cosypose_nb.singleview.config import DetectionConfig
from cosypose_nb.singleview.detection import Detector, evaluate_detector, coco_ground_truth, detection_metrics
work, new = Path(sys.argv[1]), Path(sys.argv[2])
ship_checkpoint(work / "stage2", new)
for s in ("stage1", "stage2"): (new / f"log_{s}.csv").write_text((work / s / "log.csv").read_text())
det = Detector.load(new, DetectionConfig(batch_size=4))
m, results = evaluate_detector(det, work / "heldout_data" / "test", progress=False)
gt, _ = coco_ground_truth(work / "heldout_data" / "test", det.labels)
for thr in (0.1, 0.3, 0.5): m[f"recall50_at_score_{thr}"] = detection_metrics(gt, results, thr)["recall50"]
(new / "metrics.json").write_text(json.dumps(m, indent=1))
print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}))
PY
{ echo "# detector: made by \`make checkpoints-detector\` ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?))"
  echo; echo "Commands: ci/checkpoints_detector.sh (work folder $WORK). Held-out measures (metrics.json):"; echo
  cat "$new/metrics.json"; } > "$new/MADE_BY.md"
if [ -e data/checkpoints/detector ]; then
  rm -rf data/checkpoints/detector.old; mv data/checkpoints/detector data/checkpoints/detector.old
  echo "checkpoints-detector: the previous data/checkpoints/detector is now data/checkpoints/detector.old"
fi
mv "$new" data/checkpoints/detector
echo "checkpoints-detector: data/checkpoints/detector made (work folder: $WORK)"
