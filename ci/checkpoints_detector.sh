#!/usr/bin/env bash
# Re-make the shipped CPU detector data/checkpoints/detector (`make checkpoints-detector`): record the training and
# held-out images of the default objects seen by the YCB-Video camera (480 x 640), train the `cpu` preset in five
# runs (2000 steps from scratch at its 240 x 320 input; 1500 more at a lower rate, a warm restart; then three runs at
# the full 480 x 640 input, where the objects are twice as many pixels across, the last one started from the fourth's
# weights in half precision, as it was made), measure it on held-out scenes as
# the demo records them (3-6 objects, shown as they are: --p-recolor 0), then put it in place in half precision with
# its config.json, logs, measures and MADE_BY.md. Everything is made in a new folder (DET_WORK, default
# data/checkpoints/.detector-run-<date>; an interrupted run resumes when DET_WORK is given again); the old
# checkpoint is moved to detector.old. About 12 min of recording and about 110 min of training (one run at a time, one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
WORK=${DET_WORK:-data/checkpoints/.detector-run-$(date +%Y%m%d-%H%M%S)}
K=1066.778,1067.487,312.987,241.311                     # the YCB-Video camera, 480x640
mkdir -p "$WORK"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg      # one torch thread beside the data-loader worker
resume() { [ -f "$1/state.pt" ] && echo --resume || true; }
REC=("$BIN/cosypose-nb" record --resolution 480x640 --K $K --workers 0 --no-progress)
# the pose networks' training images (ci/checkpoints_pose.sh records the same: 1-3 objects, larger), and 3-6 objects
"${REC[@]}" --scenes 1500 --views 2 --objects-per-scene 1,3 --seed 1000 --out "$WORK/train_data"
"${REC[@]}" --scenes 1000 --views 1 --seed 5000 --out "$WORK/train_cluttered"
"${REC[@]}" --scenes 30 --views 4 --seed 6000 --p-recolor 0 --split test --out "$WORK/heldout_data"
TRAIN=("$BIN/cosypose-nb" train detector --config cpu --objects default --no-rgb-augmentation --no-progress)
"${TRAIN[@]}" --data "$WORK/train_data" --seed 0 --n-steps 2000 --checkpoint-every 250 \
  --out "$WORK/stage1" $(resume "$WORK/stage1")
"${TRAIN[@]}" --data "$WORK/train_data" --seed 1 --init "$WORK/stage1" --n-steps 1500 --lr 0.0005 --warmup-steps 20 \
  --checkpoint-every 250 --out "$WORK/stage2" $(resume "$WORK/stage2")
"${TRAIN[@]}" --data "$WORK/train_data" "$WORK/train_cluttered" --seed 2 --init "$WORK/stage2" --min-size 480 --max-size 640 \
  --n-steps 1200 --lr 0.0005 --warmup-steps 20 --checkpoint-every 200 --out "$WORK/stage3" $(resume "$WORK/stage3")
"${TRAIN[@]}" --data "$WORK/train_data" "$WORK/train_cluttered" --seed 3 --init "$WORK/stage3" --min-size 480 --max-size 640 \
  --n-steps 1500 --lr 0.0003 --warmup-steps 20 --checkpoint-every 250 --out "$WORK/stage4" $(resume "$WORK/stage4")
# stage 5 starts from stage 4 as it was shipped before (float16 weights), as the shipped stage 5 was made
"$BIN/python" -c "import sys; from cosypose_nb.demo import ship_checkpoint; ship_checkpoint(sys.argv[1], sys.argv[2])" \
  "$WORK/stage4" "$WORK/stage4_half"
"${TRAIN[@]}" --data "$WORK/train_data" "$WORK/train_cluttered" --seed 4 --init "$WORK/stage4_half" --min-size 480 --max-size 640 \
  --n-steps 2000 --lr 0.0003 --warmup-steps 20 --checkpoint-every 250 --out "$WORK/stage5" $(resume "$WORK/stage5")
new=data/checkpoints/detector.new
rm -rf "$new"; mkdir -p "$new"
"$BIN/python" - "$WORK" "$new" <<'PY'
import json, sys
from pathlib import Path
from cosypose_nb.demo import ship_checkpoint
from cosypose_nb.singleview.config import DetectionConfig
from cosypose_nb.singleview.detection import Detector, evaluate_detector, coco_ground_truth, detection_metrics
work, new = Path(sys.argv[1]), Path(sys.argv[2])
ship_checkpoint(work / "stage5", new)
for s in ("stage1", "stage2", "stage3", "stage4", "stage5"): (new / f"log_{s}.csv").write_text((work / s / "log.csv").read_text())
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
