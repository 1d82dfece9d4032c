#!/usr/bin/env bash
# One-shot GPU check of nlmd on a bare GPU machine without network (issue 13, docs/performance.md "GPU").
#
#   bash bench/gpu_check.sh                 # on the GPU machine: device cuda, 144 and ~10,000 atoms
#   bash bench/gpu_check.sh --cpu-dry-run   # the same steps on a CPU machine (device cpu, smaller cells)
#
# Needs the wheel set of bench/gpu_wheels.py in gpu-wheels/ (or NLMD_WHEELS) and, on the machine, Python
# with torch, numpy, scipy, mpi4py, h5py, e3nn, torch-geometric, cmake and ninja. Steps, each timed and
# recorded even when it fails (a failed step does not stop the ones that do not depend on it):
#   install   the wheels into a scratch prefix (pip --no-index --no-deps), nothing else touched
#   build     the plugin and nlmd against the machine's torch (pip --no-build-isolation into the prefix)
#   env       versions, CUDA, GPU name
#   deploy    SevenNet-0 -> TorchScript (--no-aot; the deploy's own LAMMPS vs SevenNetCalculator check)
#   serial_ts e3gnn (TorchScript) on the device vs SevenNetCalculator on the device, <= 1e-4 eV/A on the
#             deploy's 64-atom probe (the 144-atom cell's forces reach 240 eV/A: float32 alone gives 2e-4)
#   parallel  e3gnn/parallel on 2 ranks (sharing the GPU) vs serial e3gnn, same cell
#   timing_*  LAMMPS vs ASE's SevenNetCalculator, NVE: first evaluation, steady s/step, ns/day, peak memory
#   deploy_aot, serial_aot, timing_aot_*  the same with the AOTInductor package compiled for the device
#   tests     pytest tests/test_gpu.py (its `gpu` tests run only with CUDA)
#   deploy_layers, parallel_aot  the parallel model's layers compiled for the device (nlmd.aot_layers), and
#             e3gnn/parallel on 2 ranks through them vs serial e3gnn
# NLMD_CHECK_INSTALLED=1 skips install and build (uses the nlmd installed for $PYTHON): a development aid.
# Writes $OUT/gpu_check.json (rewritten after every step, so a run cut short still leaves what it did).
set -uo pipefail
MODE=gpu
case "${1:-}" in
  --cpu-dry-run) MODE=cpu ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--cpu-dry-run]" >&2; exit 2 ;;
esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/gpu-check-out}
S=${NLMD_CHECK_SCRATCH:-${TMPDIR:-/tmp}/nlmd-gpu-check}
WHEELS=${NLMD_WHEELS:-$ROOT/gpu-wheels}
BUDGET=${NLMD_CHECK_SECONDS:-470}          # the whole check must end within 8 minutes (GPU machine)
if [ "$MODE" = gpu ]; then
  DEVICE=cuda; BIG=10000; STEPS=20; BIG_STEPS=10
else
  DEVICE=cpu; BIG=512; STEPS=2; BIG_STEPS=1
  # a CPU machine compiles and runs everything several times slower than the 16-core GPU machine
  SCALE=${NLMD_CHECK_LIMIT_SCALE:-5}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} NLMD_TORCH_THREADS=${NLMD_TORCH_THREADS:-1}
fi
mkdir -p "$OUT" "$S/log" "$S/steps"
rm -f "$S"/steps/*.json "$S"/log/*
START=$(date +%s)

elapsed() { echo $(( $(date +%s) - START )); }

# record NAME RC SECONDS: one JSON per step from its last stdout line (when it is JSON) and its stderr tail
record() {
  "$PY" - "$1" "$2" "$3" "$S/log/$1.out" "$S/log/$1.err" "$S/steps" <<'EOF'
import json, sys
from pathlib import Path
name, rc, secs, out, err, steps = sys.argv[1:]
def tail(p, n):
    try:
        return [l for l in Path(p).read_text(errors="replace").splitlines() if l.strip()][-n:]
    except OSError:
        return []
result = None
for line in reversed(tail(out, 50)):
    try:
        result = json.loads(line)
        break
    except ValueError:
        continue
entry = {"step": name, "ok": rc == "0", "rc": int(rc), "seconds": float(secs), "result": result}
if rc != "0":
    entry["stderr_tail"] = tail(err, 15)
    entry["stdout_tail"] = tail(out, 5)
Path(steps, f"{len(list(Path(steps).glob('*.json'))):02d}-{name}.json").write_text(json.dumps(entry))
EOF
  summarize
}

summarize() {
  "$PY" - "$S/steps" "$OUT/gpu_check.json" "$MODE" "$(elapsed)" "$BUDGET" <<'EOF'
import json, sys
from pathlib import Path
steps, out, mode, elapsed, budget = sys.argv[1:]
entries = [json.loads(p.read_text()) for p in sorted(Path(steps).glob("*.json"))]
summary = {"mode": mode, "elapsed_s": int(elapsed), "budget_s": int(budget),
           "ok": all(e["ok"] for e in entries if e["rc"] != -1),
           "failed": [e["step"] for e in entries if not e["ok"] and e["rc"] != -1],
           "skipped": [e["step"] for e in entries if e["rc"] == -1], "steps": entries}
Path(out).write_text(json.dumps(summary, indent=1) + "\n")
EOF
}

# step NAME LIMIT_S CMD...: run CMD with a time limit (never past the budget), record it
step() {
  local name=$1 limit=$(( $2 * ${SCALE:-1} )); shift 2
  local left=$(( BUDGET - $(elapsed) ))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped (budget spent)"
    : >"$S/log/$name.out"; : >"$S/log/$name.err"
    record "$name" -1 0
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s, $(elapsed) s elapsed)"
  local t0 rc
  t0=$(date +%s%N)
  # through bash -c so that the exported functions below can be steps too
  timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" >"$S/log/$name.out" 2>"$S/log/$name.err"
  rc=$?
  record "$name" "$rc" "$(( ($(date +%s%N) - t0) / 1000000 ))e-3"
  if [ "$rc" -ne 0 ]; then echo "   failed (rc $rc): $(tail -n 3 "$S/log/$name.err" | tr '\n' ' ')"; fi
  return "$rc"
}

PREFIX=$S/prefix
install_wheels() {
  rm -rf "$PREFIX"
  ls "$WHEELS"/*.whl >/dev/null || return 1
  local wheels=() w stubs=no
  for w in "$WHEELS"/*.whl; do
    case "$(basename "$w")" in nlmd_import_stubs-*) ;; *) wheels+=("$w") ;; esac
  done
  "$PY" -m pip install --quiet --no-index --no-deps --no-warn-script-location --prefix "$PREFIX" "${wheels[@]}" || return 1
  local init
  init=$(find "$PREFIX" -path '*-packages/lammps/__init__.py' | head -n 1)
  [ -n "$init" ] || { echo "lammps not found under $PREFIX" >&2; return 1; }
  # import stubs for pandas and sklearn (see bench/gpu_wheels.py), only where the machine lacks them
  if ! "$PY" -c "import pandas, sklearn.linear_model" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --prefix "$PREFIX" "$WHEELS"/nlmd_import_stubs-*.whl || return 1
    stubs=yes
  fi
  # the wheel set keeps one copy of the library (zip has no symlinks): liblammps.so for the Python module
  ln -sf liblammps.so.0 "$(dirname "$init")/liblammps.so"
  echo "{\"site\": \"$(dirname "$(dirname "$init")")\", \"wheels\": ${#wheels[@]}, \"import_stubs\": \"$stubs\"}"
}

set_paths() {
  local init
  init=$(find "$PREFIX" -path '*-packages/lammps/__init__.py' 2>/dev/null | head -n 1)
  SITE=$(dirname "$(dirname "$init")")
  MPILIB=$(dirname "$(find "$PREFIX" -name 'libmpi.so.12*' 2>/dev/null | head -n 1)")
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$PREFIX/bin:$PATH"
  export LD_LIBRARY_PATH="$MPILIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

build_nlmd() {    # every CPU (not nproc: it follows OMP_NUM_THREADS, which the dry run sets to 1)
  rm -rf "$S/build"
  CMAKE_ARGS="-DMPI_CXX_COMPILER=$PREFIX/bin/mpicxx" CMAKE_BUILD_PARALLEL_LEVEL=$("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))') \
    "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-warn-script-location \
    --prefix "$PREFIX" -C build-dir="$S/build" "$ROOT" || return 1
  "$PY" -c "import json, nlmd.runtime as r; print(json.dumps({'plugin': str(r.find_plugin())}))"
}

export PY PREFIX WHEELS S ROOT
export -f install_wheels build_nlmd
POT=$S/7net-0
POT_AOT=$S/7net-0-aot

if [ "${NLMD_CHECK_INSTALLED:-0}" = 1 ]; then
  # development aid: skip install and build, use the nlmd (and plugin) already installed for $PY
  echo "== install, build: skipped (NLMD_CHECK_INSTALLED=1: using $PY's installed nlmd)"
else
  step install 120 install_wheels || BLOCKED="the wheels did not install"
  set_paths
  [ -z "${BLOCKED:-}" ] && { step build 300 build_nlmd || BLOCKED="the plugin did not build"; }
fi
if [ -n "${BLOCKED:-}" ]; then   # nothing below can run: say so once instead of failing every step
  echo "stopping: $BLOCKED"; summarize; exit 1
fi
step env 60 "$PY" "$ROOT/bench/gpu_check.py" env
step deploy 150 "$PY" -m nlmd deploy 7net-0 -o "$POT" --force --no-aot --device "$DEVICE"
step serial_ts 90 "$PY" "$ROOT/bench/gpu_check.py" serial "$POT" --device "$DEVICE" \
  --serial-file deployed_serial.pt --save "$S/serial.npz" --log "$S/log/serial_ts.lammps"
MPIRUN=$("$PY" -c 'from nlmd.runtime import executable; print(executable("mpirun"))' 2>/dev/null || echo mpirun)
step parallel 120 "$MPIRUN" -np 2 "$PY" "$ROOT/bench/gpu_check.py" parallel "$POT" --reference "$S/serial.npz" \
  --log "$S/log/parallel.lammps"
step timing_ts_144 120 "$PY" "$ROOT/bench/gpu_check.py" timing "$POT" --device "$DEVICE" --atoms 144 --steps "$STEPS"
step deploy_aot 300 "$PY" -m nlmd deploy 7net-0 -o "$POT_AOT" --force --no-parallel --device "$DEVICE"
step serial_aot 90 "$PY" "$ROOT/bench/gpu_check.py" serial "$POT_AOT" --device "$DEVICE" --log "$S/log/serial_aot.lammps"
step timing_aot_144 120 "$PY" "$ROOT/bench/gpu_check.py" timing "$POT_AOT" --device "$DEVICE" --atoms 144 --steps "$STEPS"
step timing_aot_big 180 "$PY" "$ROOT/bench/gpu_check.py" timing "$POT_AOT" --device "$DEVICE" --atoms "$BIG" \
  --steps "$BIG_STEPS"
step timing_ts_big 180 "$PY" "$ROOT/bench/gpu_check.py" timing "$POT" --device "$DEVICE" --atoms "$BIG" \
  --steps "$BIG_STEPS" --no-ase
# last: the tests compile their own tiny package (for CUDA there), the longest step whose result the ones
# above do not need
step tests 240 "$PY" -m pytest -q -p no:cacheprovider "$ROOT/tests/test_gpu.py"
# the parallel model's layers compiled for the device (nlmd.aot_layers, what `nlmd deploy` adds by default),
# then e3gnn/parallel on 2 ranks again: now through the compiled layers
CKPT=$("$PY" -c 'from sevenn.util import pretrained_name_to_path as p; print(p("7net-0"))' 2>/dev/null)
step deploy_layers 300 "$PY" -m nlmd.aot_layers "$CKPT" "$POT/deployed_parallel" --device "$DEVICE"
step parallel_aot 120 "$MPIRUN" -np 2 "$PY" "$ROOT/bench/gpu_check.py" parallel "$POT" --reference "$S/serial.npz" \
  --log "$S/log/parallel_aot.lammps"
summarize
cp "$S"/log/*.lammps "$OUT"/ 2>/dev/null || true
echo "wrote $OUT/gpu_check.json ($(elapsed) s)"
"$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print('ok' if d['ok'] else 'FAILED: ' + ' '.join(d['failed']), 'skipped:', d['skipped'])" "$OUT/gpu_check.json"
