#!/usr/bin/env bash
# A GPU machine's checks as one command (~8 minutes on an H200), run from the repository root there; everything it
# measures lands under $OUT (default: a temp dir) as a few files:
#   env.txt     the GPU, driver, torch / Lightning / torchmetrics versions
#   bench/      experiments/bench_throughput.py on the GPU (plain PyTorch, ganlab, ganlab + trainer=gpu fast path)
#   cadence.txt images per second of the quality preset with trainer=gpu and the CPU preset's per-epoch work
#               (a checkpoint and a grid after every ~11-batch epoch) against the GPU preset's spacing (30 s each)
#   target.tgz  `experiments/quality/target.py --gpu --max-time $TRAIN_TIME` (the GPU preset, evaluated as the
#               CPU preset is) and `class_kid.py --record` (each class against new renders, into the run's
#               record): results files, the quality README, the run's grids, metrics and evaluations (no
#               checkpoints). Untar it over the checkout: the results files are the carried ones plus this run.
#   compile/    the throughput bench again with torch.compile, if time is left (session 26: compile with channels_last
#               failed in convolution_backward on torch 2.11, conf/trainer/gpu.yaml)
# Uses the machine's own torch, Lightning and torchmetrics (python3, or PY=...). On a machine without a package index,
# bring what it lacks as wheels in .whl/ (installed into /tmp/site first), made where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#     hydra-core==1.3.2 omegaconf==2.3.0 torch-fidelity==0.3.0 && pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
# SMOKE=1 runs every stage in seconds on a CPU, to check the script.
set -u
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
PY=${PY:-python3}
SMOKE=${SMOKE:-0}
TRAIN_TIME=${TRAIN_TIME:-00:00:03:00}
DEVICE=cuda
[ "$SMOKE" = 1 ] && DEVICE=cpu
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start )) s] $*"; }

if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc
  $PY -c "import torch, lightning, torchmetrics, hydra, ganlab.train; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'lightning', lightning.__version__, 'torchmetrics', torchmetrics.__version__, 'hydra',
hydra.__version__, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
status=$?
cat "$OUT/env.txt"
[ $status -eq 0 ] || { echo "the environment check failed"; exit 1; }

say "throughput bench"
bench=(--device $DEVICE --width 32 --batch 128 --steps 40 --warmup 5 --repeats 1 --no-metrics)
[ "$SMOKE" = 1 ] && bench=(--device cpu --width 8 --batch 16 --size 32 --steps 2 --warmup 1 --repeats 1 --no-metrics)
timeout 150 $PY experiments/bench_throughput.py "${bench[@]}" --out "$OUT/bench" 2>&1 | grep -v Warning

say "per-epoch work: the preset with trainer=gpu as it is, then the GPU preset's spacing, 30 s each"
probe=(logger=csv metrics=none trainer.enable_progress_bar=false trainer.enable_model_summary=false
       trainer.max_time=00:00:00:30 seed=1)
[ "$SMOKE" = 1 ] && probe=(logger=csv metrics=none trainer.enable_progress_bar=false trainer.max_time=00:00:00:05
                            data.image_size=32 data.per_class=40 data.batch_size=8 model.generator.width=8
                            model.discriminator.width=8 trainer.accelerator=cpu trainer.precision=32-true
                            trainer.strategy.data_on_device=false)
: > "$OUT/cadence.txt"
for preset in "brainsim_quality trainer=gpu" brainsim_quality_gpu; do
  run=/tmp/cadence_${preset%% *}; rm -rf "$run"
  timeout 120 $PY -m ganlab.train experiment=$preset "${probe[@]}" hydra.run.dir=$run > $run.log 2>&1 || tail -5 $run.log
  $PY - "$run" "$preset" "${probe[@]}" >> "$OUT/cadence.txt" 2>&1 <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "experiments/quality")
from run import images_shown
run, preset, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
seconds = float(next(a.split(":")[-1] for a in overrides if a.startswith("trainer.max_time")))
kimg = images_shown(run) / 1000
print(f"experiment={preset}: {kimg:.1f} kimg in {seconds:.0f} s of training = {1000 * kimg / seconds:.0f} images/s")
EOF
done
cat "$OUT/cadence.txt"

say "the GPU preset for $TRAIN_TIME, evaluated as the CPU preset is"
target=(--gpu --max-time "$TRAIN_TIME" --seeds 1)
[ "$SMOKE" = 1 ] && target=(--smoke --max-time 00:00:00:10 --seeds 1)
timeout 330 $PY experiments/quality/target.py "${target[@]}" 2>&1 | grep -v Warning | tail -40
run_dir=$(ls -dt outputs/experiments/quality/preset_*_s1 2>/dev/null | head -1)
[ "$SMOKE" = 1 ] && run_dir=$(ls -dt /tmp/quality_*/preset_*_s1 2>/dev/null | head -1)
if [ -n "$run_dir" ] && [ "$SMOKE" != 1 ]; then
  say "class_kid on $run_dir, into its target record; the target table again"
  timeout 90 $PY experiments/quality/class_kid.py --record 2>&1 | grep -v Warning | tail -8
  timeout 30 $PY experiments/quality/target.py --add-best 2>&1 | grep -F "(rare KID <= 2 x common mean, against"
fi
if [ -n "$run_dir" ]; then
  tar czf "$OUT/target.tgz" --exclude='*.ckpt' experiments/quality/results/target.jsonl \
    experiments/quality/results/class_kid.jsonl experiments/quality/README.md "$run_dir" 2>/dev/null
  say "packed $run_dir (no checkpoints)"
fi

left=$(( 470 - ($(date +%s) - start) ))
if [ "$SMOKE" != 1 ] && [ $left -gt 60 ]; then
  say "throughput bench with torch.compile (${left} s left)"
  timeout $left $PY experiments/bench_throughput.py "${bench[@]}" --compile --out "$OUT/compile" 2>&1 | grep -v Warning
fi
say "done"
