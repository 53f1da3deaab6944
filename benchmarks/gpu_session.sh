#!/usr/bin/env bash
# The benchmark suite on a lent GPU machine, in one call (device time is short: minutes).
#
#   bash benchmarks/gpu_session.sh OUT_DIR
#
# Runs from the repository root with the machine's own Python (jax with CUDA, optax, optimistix,
# scipy, chex, pytest); jaxopt travels as a wheel in .whl/ (see .git/info/exclude). Each stage has
# its own time limit, most valuable first, so that a stage that runs long costs only itself:
#   1. Gpufit's benchmark (2-D Gaussian 5x5, float32, 10^4 to 10^7 fits) against jaxopt;
#   2. pool widths for those fits (benchmarks/lanes.py);
#   3. the Gaussian-peak fits in float64 (full mode), then pool widths for them;
#   4. roots (full mode), minimisation (quick), the peak fits in float32 (quick).
# Meanwhile the test suite runs on the host's CPU (JAX_PLATFORMS=cpu, other cores): a check that
# the library works with the machine's newer JAX. JSON records and logs land in OUT_DIR.
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

JAX_PLATFORMS=cpu taskset -c "$TEST_CPUS" timeout "${TEST_LIMIT:-520}" \
  python3 -m pytest -q -n 6 -p no:cacheprovider >"$OUT_DIR/pytest_cpu.log" 2>&1 &
TESTS=$!

B=benchmarks
R="--out /tmp/mml_results --budget 1"
stage 100 "$BENCH_CPUS" python3 $B/run.py --full --f32 --only gpufit $R
stage 60 "$BENCH_CPUS" python3 $B/lanes.py --f32 --task gauss2d --sizes 1000000,10000000 --lanes 1/1,1/32
stage 140 "$BENCH_CPUS" python3 $B/run.py --full --only fitting $R
stage 50 "$BENCH_CPUS" python3 $B/lanes.py --task peak --sizes 10000,100000 --lanes 1/1,1024,1/64
stage 60 "$BENCH_CPUS" python3 $B/run.py --full --only roots $R
stage 60 "$BENCH_CPUS" python3 $B/run.py --only minimise $R
stage 50 "$BENCH_CPUS" python3 $B/run.py --f32 --only fitting $R
cp /tmp/mml_results/*.json "$OUT_DIR"/ 2>/dev/null
wait $TESTS
echo "tests exit $?" >>"$LOG"
tail -3 "$OUT_DIR/pytest_cpu.log" >>"$LOG"
