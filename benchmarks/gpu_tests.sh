#!/usr/bin/env bash
# The test suite on a lent GPU machine itself, in parts (device time is short: minutes).
#
#   bash benchmarks/gpu_tests.sh OUT_DIR
#
# Runs from the repository root with the machine's own Python (jax with CUDA, pytest, xdist).
# The files go in groups, most likely to find an accelerator-only failure first; each group has
# its own limit in seconds (below) and writes its own --junitxml and -v log (packed into OUT_DIR/raw.tgz), so a group that
# runs out of time costs only itself and the failures of the finished ones keep their tracebacks.
# XLA_PYTHON_CLIENT_PREALLOCATE=false: many pytest workers share the one GPU.
set -u
OUT_DIR=${1:?usage: gpu_tests.sh OUT_DIR}
WORKERS=${WORKERS:-10}
RAW=/tmp/gpu_tests_raw  # logs and junit files, packed into OUT_DIR/raw.tgz after each group
mkdir -p "$OUT_DIR" "$RAW"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$PWD PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import jax, xdist; print('jax', jax.__version__, jax.devices())"
  git log -1 --format=%h 2>/dev/null
} >"$OUT_DIR/env.txt" 2>&1
run_group() {  # run_group NAME SECONDS files...
  local name=$1 limit=$2; shift 2
  echo "=== $(date -u +%T) $name" >>"$OUT_DIR/summary.txt"
  timeout "$limit" python3 -m pytest -v -n "$WORKERS" -p no:cacheprovider --tb=short -rfE \
    --junitxml="$RAW/$name.xml" "$@" >"$RAW/$name.log" 2>&1
  local rc=$?
  echo "=== $(date -u +%T) $name exit $rc$([ $rc = 124 ] && echo ' (out of time)')" \
    >>"$OUT_DIR/summary.txt"
  grep -E "^(FAILED|ERROR) |^=+ .*(passed|failed)" "$RAW/$name.log" | tail -30 >>"$OUT_DIR/summary.txt"
  tar -czf "$OUT_DIR/raw.tgz" -C "$(dirname "$RAW")" "$(basename "$RAW")"
}
cd tests
run_group fitting 150 test_fitting.py test_fitting_batch.py test_fitting_edges.py \
  test_fitting_pinned.py test_fitting_wrong_turns.py test_nist.py
run_group minimise 120 test_minimise.py test_minimise_linesearch.py test_minimise_steps.py \
  test_minimise_unbounded.py test_mgh.py
run_group constrained 100 test_constrained.py test_constrained_api.py test_constrained_robust.py \
  test_constrained_steps.py
run_group rest 100 test_core.py test_core_rules.py test_derivatives.py test_implicit_rules.py \
  test_roots.py test_roots_rules.py test_static.py test_taylor.py test_taylor_rules.py \
  test_readme.py test_sharding.py
[ "${SKIP_EXAMPLES:-1}" = 1 ] || run_group examples 150 test_examples.py
