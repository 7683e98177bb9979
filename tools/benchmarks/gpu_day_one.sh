#!/usr/bin/env bash
# Day one on a GPU (gpu_day_one.py): every recipe trained briefly through tools/train.py, a
# SIGUSR1 stop and --resume, tools/test.py and tools/infer.py, into gpu_day_one.md/.json under
# $OUT (else the work folder). On a bare machine the first call installs the stack from WHEELS
# and builds mmcv's CUDA ops (openmmlab_site.sh, about 4 min); later calls reuse them:
#   WHEELS=DIR bash tools/benchmarks/gpu_day_one.sh --setup-only   # the build, one command
#   bash tools/benchmarks/gpu_day_one.sh                           # the runs, under 8 min
#   bash tools/benchmarks/gpu_day_one.sh --tiny                    # the same on CPU (the test)
# Environment: PY (python with torch, default python3); WHEELS, TORCH_CUDA_ARCH_LIST and
# MAX_JOBS as in openmmlab_site.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/benchmarks/openmmlab_site.sh
if [ "${1:-}" = --setup-only ]; then
    echo "stack ready: $($PY -c 'import mmcv, mmdet, mmpretrain, torch; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmpretrain", mmpretrain.__version__)')"
    exit 0
fi
PYTHONUNBUFFERED=1 exec $PY tools/benchmarks/gpu_day_one.py "$@"
