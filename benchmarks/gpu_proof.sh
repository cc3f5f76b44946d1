#!/usr/bin/env bash
# One prepared command for a bare GPU machine (issue #17 item 5): build the CUDA kernels, run
# the GPU tests, the GPU rows of `sonoedge bench kernels` (CUDA vs CuPy vs torch, with the
# empty-launch floor) and the torch-CUDA end to end on 600x800 frames with the default model,
# and write everything, with the device name, into one folder. Sized for the device tool's
# lease: each step has its own timeout, the whole run stays within 8 minutes on an H200.
#
#   benchmarks/gpu_proof.sh [--dry-run] [--out DIR]
#
#   --dry-run   the CPU parts only, anywhere (no nvcc / GPU needed): the kernels' CPU rows, the
#               GPU tests collected (not run), the end-to-end harness on the CPU. Checks the
#               script itself before a lease is spent on it.
#   --out DIR   where the results go (default: $OUT when set -- the device tool's folder --
#               else gpu-proof-out/).
#
# Targets it reports against (issue #17): CUDA preprocess <= 10 us per frame and >= 5x CuPy;
# torch-CUDA end-to-end p50 <= 1 ms. Exit status: 0 when every step ran (targets are reported,
# not asserted), 1 when a step failed (its log says why).
set -uo pipefail
CALLER="$PWD"
cd "$(dirname "$0")/.."

DRY=0
DEST="${OUT:-gpu-proof-out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) DEST="$2"; shift ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "gpu_proof: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$DEST" in /*) ;; *) [ -n "${OUT:-}" ] || [ "$DEST" = gpu-proof-out ] || DEST="$CALLER/$DEST" ;; esac
mkdir -p "$DEST"
PY="${PYTHON:-python3}"
# -P: never import the checkout's own sdk/ from the working directory (a non-editable install
# would be shadowed by a source tree without the compiled module); use what is installed.
PYP=("$PY" -P)
export PYTHONUNBUFFERED=1
fail=0
step() {  # step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  echo "== $name (timeout ${limit}s)"
  local t0=$SECONDS
  if timeout "$limit" "$@" >"$DEST/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s"
  else
    echo "   FAILED (rc $?) after $((SECONDS - t0)) s: see $DEST/$name.log"; tail -n 15 "$DEST/$name.log"
    fail=1
  fi
}

# 1. what machine this is
{
  echo "date: $(date -u +%FT%TZ)"; echo "dry_run: $DRY"; uname -a
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  command -v nvcc >/dev/null && nvcc --version | tail -n 1
  "${PYP[@]}" - <<'PYEOF'
import platform
print("python", platform.python_version())
for m in ("numpy", "torch", "cupy", "onnxruntime", "cv2"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:  # report, never stop here
        print(m, "missing:", type(e).__name__)
try:
    import torch
    print("cuda device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
except Exception:
    pass
PYEOF
} >"$DEST/machine.txt" 2>&1
cat "$DEST/machine.txt"

# 2. build: the extension with the CUDA kernels (CPU only in a dry run), no dependency fetched
if [ "$DRY" = 1 ]; then
  "${PYP[@]}" -c "import sdk._kernels" 2>/dev/null \
    || step build 600 env SONOEDGE_CUDA=OFF "$PY" -m pip install -q --no-build-isolation --no-deps -e .
else
  step build 300 env SONOEDGE_CUDA=ON CMAKE_CUDA_ARCHITECTURES=90 \
    "$PY" -m pip install -q --no-build-isolation --no-deps -e . -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90
fi

# 3. the GPU tests (collected only in a dry run)
if [ "$DRY" = 1 ]; then
  step gpu-tests 300 "${PYP[@]}" -m pytest -m gpu --collect-only -q -p no:cacheprovider tests
else
  step gpu-tests 240 "${PYP[@]}" -m pytest -m gpu -q -p no:cacheprovider -x tests/kernels tests/sdk
fi

# 4. kernels: CUDA vs CuPy vs torch (GPU rows appear when a device is there)
if [ "$DRY" = 1 ]; then
  step bench-kernels 300 "${PYP[@]}" -m sdk.cli bench kernels --no-gpu --repeat 20 --out "$DEST" --stem kernels-dry-run
else
  step bench-kernels 180 "${PYP[@]}" -m sdk.cli bench kernels --repeat 200 --out "$DEST" --stem kernels-gpu
fi

# 5. end to end through the torch backend on CUDA (CUDA graph), 600x800 uint8 frames
DEVICE=cuda; [ "$DRY" = 1 ] && DEVICE=cpu
REPEAT=500; [ "$DRY" = 1 ] && REPEAT=30
step e2e-torch 180 "${PYP[@]}" - "$DEVICE" "$REPEAT" "$DEST" <<'PYEOF'
import json, sys, time
import numpy as np
import sdk
from sdk import synthetic
device, repeat, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
frames = [synthetic.phantom(lbl, size=(600, 800), seed=100 + i)[0]
          for i, lbl in zip(range(16), ["benign", "malignant", "normal"] * 6)]
rows = {}
for backend, dev in (("torch", device), ("onnxruntime", "cpu")):
    a = sdk.Analyzer(backend=backend, device=dev, threads=None).load()
    for f in frames[:8]:
        a.run(f)  # warm-up (CUDA graph capture on the first calls)
    ts, res = [], []
    for i in range(repeat):
        t = time.perf_counter(); r = a.run(frames[i % 16]); ts.append(time.perf_counter() - t)
        res.append(r.label)
    ms = np.array(ts) * 1e3
    rows[f"{backend}-{dev}"] = {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
                                "labels": res[:16]}
    a.close()
name = "torch-" + device
agree = float(np.mean([x == y for x, y in zip(rows[name]["labels"], rows["onnxruntime-cpu"]["labels"])]))
out = {"rows": rows, "label_agreement_first16": agree, "target_p50_ms": 1.0}
json.dump(out, open(f"{dest}/e2e-torch.json", "w"), indent=2)
for k, v in rows.items():
    print(f"{k}: p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms")
print(f"label agreement torch-{device} vs onnxruntime-cpu on 16 frames: {agree:.2f}")
PYEOF

echo "== results in $DEST:"; ls -1 "$DEST"
exit $fail
