#!/usr/bin/env bash
# Create .venv with the pinned stack. mmcv's C++/CUDA ops are compiled once per
# (mmcv, torch, device) and the wheel is kept outside the clone, so other clones and
# later runs install it in seconds. Idempotent: a no-op when requirements are unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
REQ="$ROOT/requirements.txt"
WHEEL_CACHE="${MMCV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openmmlab-wheels}"
STAMP="$VENV/.setup-stamp"

pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$REQ"; }
want_stamp="$(cat "$REQ" "${BASH_SOURCE[0]}" "$ROOT/tools/install/uv_args.py" | sha256sum | cut -d' ' -f1)"
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

t0=$SECONDS
[[ -x "$PY" ]] || python3 -m venv "$VENV"
pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }
# uv installs the stack (in parallel, linking files from its cache). It reads no pip
# configuration, so tools/install/uv_args.py turns pip's (pip.conf files, PIP_* variables) into
# uv's options and variables.
pip_ install -q "uv==$(pin uv)"
"$PY" "$ROOT/tools/install/uv_args.py" > "$VENV/.uv-args"
UV_ENV=() UV_ARGS=() seen_sep=
while IFS= read -r -d '' a; do
    if [[ -z $seen_sep && $a == -- ]]; then seen_sep=1
    elif [[ -n $seen_sep ]]; then UV_ARGS+=("$a")
    else UV_ENV+=("$a"); fi
done < "$VENV/.uv-args"
uv_install() { env ${UV_ENV[@]+"${UV_ENV[@]}"} "$VENV/bin/uv" pip install -q --python "$PY" \
    "${UV_ARGS[@]}" "$@"; }
# mmcv builds against the installed torch (--no-build-isolation), so torch and the build
# tools come first.
uv_install -c "$REQ" "torch==$(pin torch)" "torchvision==$(pin torchvision)" \
    "onedl-mmengine==$(pin onedl-mmengine)" setuptools wheel "packaging>=24.2" ninja psutil

MMCV_VERSION="$(pin onedl-mmcv)"
# The wheel file name does not record torch or CUDA, so the cache key does.
# mmcv's own rule: CUDA ops when a GPU is visible or FORCE_CUDA=1.
KEY="$("$PY" - <<PY
import os, torch
cuda = torch.version.cuda and (torch.cuda.is_available() or os.environ.get('FORCE_CUDA') == '1')
print(f"mmcv-$MMCV_VERSION-torch{torch.__version__}-" + (f"cuda{torch.version.cuda}" if cuda else "cpu"))
PY
)"
WHEEL_DIR="$WHEEL_CACHE/$KEY"
if ! ls "$WHEEL_DIR"/onedl_mmcv-*.whl >/dev/null 2>&1; then
    echo "setup: building mmcv ops ($KEY); ~16 min on 2 cores, once per machine"
    pip_ install -q --upgrade pip
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    pip_ download -q --no-deps --no-binary :all: -d "$BUILD" "onedl-mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD"/onedl_mmcv-*.tar.gz -C "$BUILD"
    SRC="$(echo "$BUILD"/onedl_mmcv-*/)"
    # torch>=2.14 headers require C++20 (`#error C++20 or later ... ATen`) but mmcv's setup.py
    # hard-codes -std=c++17 for g++ and nvcc; raise it in this build's copy only.
    if "$PY" -c "import torch,sys; from packaging.version import parse as v; sys.exit(v(torch.__version__.split('+')[0]) < v('2.14'))"; then
        sed -i 's/-std=c++1[47]/-std=c++20/g' "$SRC/setup.py"
    fi
    (cd "$SRC" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PY" -m pip --disable-pip-version-check wheel -q --no-build-isolation --no-deps -w "$BUILD/dist" .)
    mkdir -p "$WHEEL_DIR"
    # copy then rename, so a killed build never leaves a half-written wheel in the cache
    for w in "$BUILD"/dist/*.whl; do
        cp "$w" "$WHEEL_DIR/.$(basename "$w").tmp" && mv "$WHEEL_DIR/.$(basename "$w").tmp" "$WHEEL_DIR/$(basename "$w")"
    done
fi

uv_install --find-links "$WHEEL_DIR" --only-binary onedl-mmcv -r "$REQ"
# Bytecode is written here, not at first import: PYTHONDONTWRITEBYTECODE (set in many images) or
# a read-only environment would make every process compile again. Files for other Python
# versions fail to compile and are skipped.
"$PY" - <<'PY'
import compileall, sysconfig
for folder in {sysconfig.get_paths()[k] for k in ('purelib', 'platlib')}:
    compileall.compile_dir(folder, quiet=2, workers=0)
PY
"$PY" - <<'PY'
import torch, mmengine, mmcv, mmdet, mmpretrain, torchvision
from mmcv.ops import nms, RoIAlign  # fails if the compiled ops are missing
print(f"setup: torch {torch.__version__} torchvision {torchvision.__version__} "
      f"mmengine {mmengine.__version__} mmcv {mmcv.__version__} mmdet {mmdet.__version__} "
      f"mmpretrain {mmpretrain.__version__}")
PY
echo "$want_stamp" > "$STAMP"
echo "setup: done in $((SECONDS - t0)) s"
