# Sourced by the GPU benchmark scripts (bench_gpu.sh, gpu_day_one.sh) after `cd` to the
# repository: makes `$PY` import mmcv.ops, mmdet and mmpretrain. Where `make setup` ran (or an
# earlier call built them) that is a check; on a bare machine with torch but no OpenMMLab and no
# package index, it installs the packages from WHEELS into $SITE and builds mmcv's CUDA ops there
# (246 s on 16 cores for one H200 arch), which later calls on the same machine reuse.
# Environment: PY (python with torch, default python3); WHEELS=DIR with the onedl-mmcv sdist and
# wheels of the other OpenMMLab packages and their pure-Python needs; TORCH_CUDA_ARCH_LIST
# (default: this GPU's); MAX_JOBS (default: all cores).
PY=${PY:-python3}
SITE=/tmp/openmmlab-site
stack_ok() { $PY -c 'import mmcv.ops, mmdet, mmpretrain' 2>/dev/null; }
if ! stack_ok; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}  # an earlier call's install, if any
fi
if ! stack_ok; then
    : "${WHEELS:?mmcv ops are missing: set WHEELS=DIR (onedl-mmcv sdist + wheels), or run make setup}"
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target $SITE "$WHEELS"/*.whl
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
