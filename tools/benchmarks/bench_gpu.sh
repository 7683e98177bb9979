#!/usr/bin/env bash
# bench_gpu.py on a GPU machine. Where `make setup` ran it just runs it; on a bare machine with
# torch but no OpenMMLab and no package index, it first installs the packages from WHEELS into
# a private folder and builds mmcv's CUDA ops there (246 s on 16 cores for one H200 arch).
#   bash tools/benchmarks/bench_gpu.sh [bench_gpu.py options]
# Environment: PY (python with torch, default python3); WHEELS=DIR with the onedl-mmcv sdist and
# wheels of the other OpenMMLab packages and their pure-Python needs; TORCH_CUDA_ARCH_LIST
# (default: this GPU's); MAX_JOBS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
if ! $PY -c 'import mmcv.ops, mmdet, mmpretrain' 2>/dev/null; then
    : "${WHEELS:?mmcv ops are missing: set WHEELS=DIR (onedl-mmcv sdist + wheels), or run make setup}"
    SITE=/tmp/openmmlab-site
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target $SITE "$WHEELS"/*.whl
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    # mmpretrain 1.3.6 imports its multimodal models (BLIP & co., unused here) whenever
    # transformers is installed, and they fail with transformers >= 5: keep them out of this copy
    if ! $PY -c 'import transformers as t; assert int(t.__version__.split(".")[0]) < 5' 2>/dev/null
    then
        sed -i 's/^if WITH_MULTIMODAL:/if False:  # transformers >= 5/' \
            $SITE/mmpretrain/models/multimodal/__init__.py
    fi
    cap=$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap} MAX_JOBS=${MAX_JOBS:-$(nproc)}
    log=/tmp/mmcv-build.log
    t=$SECONDS
    if ! FORCE_CUDA=1 MMCV_WITH_OPS=1 $PY -m pip wheel --no-index --no-deps --no-build-isolation \
            -w /tmp/mmcv-wheel "$WHEELS"/onedl_mmcv-*.tar.gz >$log 2>&1; then
        tail -30 $log
        echo "mmcv CUDA build failed after $((SECONDS - t)) s (log: $log)"
        exit 1
    fi
    echo "mmcv CUDA ops built in $((SECONDS - t)) s (arch $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target $SITE \
        /tmp/mmcv-wheel/*.whl
fi
$PY tools/benchmarks/bench_gpu.py "$@"
