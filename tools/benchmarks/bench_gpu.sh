#!/usr/bin/env bash
# bench_gpu.py on a GPU machine. Where `make setup` ran it just runs it; on a bare machine with
# torch but no OpenMMLab and no package index, it first installs the packages from WHEELS into
# a private folder and builds mmcv's CUDA ops there (openmmlab_site.sh, which later calls reuse).
#   bash tools/benchmarks/bench_gpu.sh [bench_gpu.py options]
# Environment: PY (python with torch, default python3); WHEELS=DIR with the onedl-mmcv sdist and
# wheels of the other OpenMMLab packages and their pure-Python needs; TORCH_CUDA_ARCH_LIST
# (default: this GPU's); MAX_JOBS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/benchmarks/openmmlab_site.sh
$PY tools/benchmarks/bench_gpu.py "$@"
