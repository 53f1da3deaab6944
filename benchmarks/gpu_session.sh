#!/usr/bin/env bash
# The benchmark suite on a lent GPU machine, in one call (device time is short: minutes).
#
#   bash benchmarks/gpu_session.sh OUT_DIR
#
# Runs from the repository root with the machine's own Python (jax with CUDA, optax, optimistix,
# scipy, chex, pytest); jaxopt travels as a wheel in .whl/ (see .git/info/exclude). Each stage has
# its own time limit, most valuable first, so that a stage that runs long costs only itself:
#   0. whether our calls take JAX's C++ dispatch path there (benchmarks/dispatch_path.py);
#   1. the slowest fits of a 10^5 batch, replayed step by step (benchmarks/stragglers.py);
#   2. Gpufit's benchmark (2-D Gaussian 5x5, float32, 10^4 to 10^7 fits) against jaxopt;
#   3. the Gaussian-peak fits in float64 (full mode);
#   4. roots (full mode), minimisation (quick), least squares of a residual function (full:
#      Osborne 1 from 10^3 and 10^4 starts), the peak fits in float32 (quick);
#   5. where a small fit's time goes: kernels and their time per call (benchmarks/profile_fit.py),
#      and the operations per loop turn of ours and jaxopt's compiled fits (benchmarks/kernels.py).
# (Pool widths, benchmarks/lanes.py, were swept on an H100 in docs/gpu_benchmark.md.)
# Meanwhile the test suite runs on the host's CPU (JAX_PLATFORMS=cpu, other cores): a check that
# the library works with the machine's newer JAX. JSON records and logs land in OUT_DIR.
# The cores of each side are BENCH_CPUS (default 0-9) and TEST_CPUS (10-15), for a 16-core host.
# TABLES_ONLY=1 skips the diagnostic stages 1 and 5 (about 160 s less): the benchmark tables only.
set -u
OUT_DIR=${1:?usage: gpu_session.sh OUT_DIR}
mkdir -p "$OUT_DIR" /tmp/mml_results
export PYTHONUNBUFFERED=1 MML_BENCH_TIGHT=${MML_BENCH_TIGHT:-2000}
BENCH_CPUS=${BENCH_CPUS:-0-9} TEST_CPUS=${TEST_CPUS:-10-15}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
else
  export PYTHONPATH=.
fi
LOG="$OUT_DIR/benchmarks.log"
stage() {  # stage SECONDS CPUS command...: one stage, its own limit, its output to the log
  local limit=$1 cpus=$2; shift 2
  echo "=== $(date -u +%T) $* (limit ${limit}s)" >>"$LOG"
  taskset -c "${cpus}" timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "=== $(date -u +%T) exit $?" >>"$LOG"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import jax, optax, optimistix, scipy; print('jax', jax.__version__, jax.devices())"
  nproc
} >>"$LOG" 2>&1

JAX_PLATFORMS=cpu taskset -c "$TEST_CPUS" timeout "${TEST_LIMIT:-400}" \
  python3 -m pytest -q -n 6 -p no:cacheprovider >"$OUT_DIR/pytest_cpu.log" 2>&1 &
TESTS=$!

B=benchmarks
# (--in-process: each stage has its own time limit here, and a child process per module
# would spend seconds of it on a second JAX start-up)
R="--out /tmp/mml_results --budget 1 --in-process"
stage 40 "$BENCH_CPUS" python3 $B/dispatch_path.py
[ "${TABLES_ONLY:-0}" = 1 ] ||
  stage 40 "$BENCH_CPUS" python3 $B/stragglers.py --size 100000 --top 2 --steps 60 --out "$OUT_DIR/stragglers.json"
stage 150 "$BENCH_CPUS" python3 $B/run.py --full --f32 --only gpufit $R
stage 130 "$BENCH_CPUS" python3 $B/run.py --full --only fitting $R
stage 40 "$BENCH_CPUS" python3 $B/run.py --full --only roots $R
stage 60 "$BENCH_CPUS" python3 $B/run.py --only minimise $R
stage 60 "$BENCH_CPUS" python3 $B/run.py --full --only least_squares $R
stage 45 "$BENCH_CPUS" python3 $B/run.py --only fixed_point $R
stage 45 "$BENCH_CPUS" python3 $B/run.py --f32 --only fitting $R
if [ "${TABLES_ONLY:-0}" != 1 ]; then
  stage 60 "$BENCH_CPUS" python3 $B/profile_fit.py --sizes 1,10000
  stage 40 "$BENCH_CPUS" python3 $B/kernels.py --size 10000 --out-dir /tmp/mml_hlo
  tar -czf "$OUT_DIR/hlo.tgz" -C /tmp mml_hlo 2>/dev/null
fi
cp /tmp/mml_results/*.json "$OUT_DIR"/ 2>/dev/null
wait $TESTS
echo "tests exit $?" >>"$LOG"
tail -3 "$OUT_DIR/pytest_cpu.log" >>"$LOG"
rm -f "$OUT_DIR/pytest_cpu.log"  # (its tail is in the log: the call brings back 8 files at most)
