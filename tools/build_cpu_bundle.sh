#!/usr/bin/env bash
# Build the CPU-only variant of the desktop bundle (fvdesk.spec) in a fresh virtual environment
# and run `fvdesk --self-test` on the frozen result.  Exit 0 only when the self-test passes.
#
#   tools/build_cpu_bundle.sh            # build in build/cpu-bundle/, print size and times
#
# Environment:
#   PYTHON        interpreter for the build venv (default: python3)
#   TORCH_SPEC    the CPU torch to install (default: torch==2.13.0+cpu; from PyPI alone pip finds
#                 no "+cpu" build: add PyTorch's CPU wheel index, e.g.
#                 PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)
#   BUNDLE_DIR    where the venv, PyInstaller's work files and dist/ go (default: build/cpu-bundle)
#
# Why no torchvision: PyPI's torchvision wheels are built against the CUDA torch and fail to
# import beside a CPU torch.  fvdesk does not need it: onnx2torch imports it only for its
# NonMaxSuppression/RoiAlign converters, and fvdesk.core.model.onnx2torch_compat lets onnx2torch
# import without it.  onnx2torch itself is installed with --no-deps for the same reason, and
# fvdesk with --no-deps because its requirements name onnxruntime-gpu on Linux x86-64.
# Not part of the test suite (it takes a quarter of an hour or more on two cores).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
BUNDLE_DIR="${BUNDLE_DIR:-$ROOT/build/cpu-bundle}"
VENV="$BUNDLE_DIR/venv"
t0=$(date +%s)

echo "== fresh venv in $VENV"
rm -rf "$VENV" "$BUNDLE_DIR/work" "$BUNDLE_DIR/dist"
mkdir -p "$BUNDLE_DIR"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "== installing $TORCH_SPEC and the CPU dependencies"
"${PIP[@]}" install -q "$TORCH_SPEC"
"$VENV/bin/python" - <<'PY'
import sys, torch
if torch.version.cuda is not None:
    sys.exit(f"torch {torch.__version__} is a CUDA build; set TORCH_SPEC to a CPU build")
print(f"torch {torch.__version__} (CPU build)")
PY
"${PIP[@]}" install -q "onnx>=1.16" "onnxruntime>=1.18" "numpy>=1.24" "pillow>=10" \
    "PySide6-Essentials>=6.6,<6.12" "pyinstaller>=6.10"
"${PIP[@]}" install -q --no-deps "onnx2torch==1.5.15"
"${PIP[@]}" install -q --no-deps "$ROOT"
t1=$(date +%s)

echo "== pyinstaller (FVDESK_CPU_BUILD=1)"
(cd "$ROOT" && FVDESK_CPU_BUILD=1 "$VENV/bin/pyinstaller" --noconfirm --log-level WARN \
    --workpath "$BUNDLE_DIR/work" --distpath "$BUNDLE_DIR/dist" fvdesk.spec)
t2=$(date +%s)

APP="$BUNDLE_DIR/dist/fvdesk/fvdesk"
echo "== $APP --self-test"
set +e
env -u DISPLAY -u WAYLAND_DISPLAY "$APP" --self-test
rc=$?
set -e
t3=$(date +%s)
size=$(du -sh "$BUNDLE_DIR/dist/fvdesk" | cut -f1)
echo "== bundle $BUNDLE_DIR/dist/fvdesk: $size; install $((t1 - t0)) s, pyinstaller $((t2 - t1)) s, self-test $((t3 - t2)) s"
exit $rc
