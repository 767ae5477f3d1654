#!/usr/bin/env bash
# GPU acceptance checks in one run on a lent GPU machine, within 7 minutes on one H200:
#   a   python -m benchmarks --sections gpu       b   digits on trainer=gpu, bf16-mixed: test acc >= 0.97
#   c   launcher=gpus sweep, 2 jobs, one GPU       d   data.cache_decode=cuda pixels vs the PIL path
#   e1  trainer=ddp trainer.devices=1 (NCCL)       e2  e1 resumed from its last.ckpt to 2 epochs
# A lent machine is rare and its time short, so every check runs whatever the others did, each under
# its own timeout, and all within one deadline (GPU_CHECK_BUDGET_S, default 400 s); the benchmark, the
# longest, runs last so that a slow one costs only its own row. The verdicts are computed by
# benchmarks/gpu_check.py (the thresholds and the pixel tolerance are documented there).
#
# Writes benchmarks/results/<gpu>-<date>.md (GPU, torch, date, then check | outcome | figure | seconds,
# then the benchmark's table; the same name `python -m benchmarks` gives its own file, which this one
# replaces and includes) and benchmarks/results/gpu_check-<date>.log. Both are rewritten as the checks
# go and also land in $OUT when it is set, so a run cut short still returns what it measured.
#
#   bash benchmarks/gpu_check.sh                              # repo root; exit 0 when every check is ok
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh      # another interpreter (default: python3)
#
# Offline machine: run benchmarks/gpu_wheels.sh where PyPI is reachable and bring .whl/ along; its wheels
# are installed into /tmp/site first. Other settings: GPU_CHECK_RESULTS_DIR (default benchmarks/results),
# GPU_CHECK_ALLOW_CPU=1 (run the checks without CUDA, where they fail: a test of this script),
# GPU_CHECK_KEEP=1 (keep the work folder), GPU_CHECK_BENCH_ARGS (e.g. --quick for a short benchmark),
# GPU_CHECK_ONLY (ids to run, e.g. "a c"; e2 needs e1; the others are recorded as not selected).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

PYTHON=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-400}
RESULTS_DIR=${GPU_CHECK_RESULTS_DIR:-benchmarks/results}
MIN_STEP_S=20 # a step with less time left than this is skipped rather than started
DATE=$(date +%F)
LOG=$RESULTS_DIR/gpu_check-$DATE.log
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
ROWS=$WORK/rows.tsv
NO_CUDA="the environment check did not run"
STEP_RC=0 STEP_S=0 STEP_LIMIT=0 REPORT_RC=1

install_wheels() { # the packages the machine's Python lacks (hydra-core, omegaconf, ...), from .whl/
  local wheels=(.whl/*.whl) site=/tmp/site
  [[ -f ${wheels[0]} ]] || { echo "no .whl/*.whl: using $PYTHON's own packages"; return; }
  echo "installing ${#wheels[@]} wheels into $site: ${wheels[*]##*/}"
  if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}"; then
    echo "pip install failed; unpacking the (pure-Python) wheels into $site instead"
    "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$site" "${wheels[@]}"
  fi
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
}

# run_step ID LIMIT_S CMD...: CMD under `timeout` (its whole process group), its output into the log and
# $WORK/ID.out. Sets STEP_RC (exit status, or "budget" when the deadline left too little time), STEP_S,
# STEP_LIMIT (the timeout it got: its own, or what is left of the budget).
run_step() {
  local id=$1 limit=$2 started=$SECONDS left=$((BUDGET_S - SECONDS))
  shift 2
  ((limit > left)) && limit=$left
  STEP_LIMIT=$limit STEP_S=0
  if ((limit < MIN_STEP_S)); then
    STEP_RC=budget
    echo "=== [$id] not started: $left s left of the $BUDGET_S s budget"
    return
  fi
  echo
  echo "=== [$id] $(date +%T), ${SECONDS} s into the run, timeout ${limit} s: $*"
  timeout -k 10 "$limit" "$@" </dev/null 2>&1 | tee "$WORK/$id.out"
  STEP_RC=${PIPESTATUS[0]}
  STEP_S=$((SECONDS - started))
  echo "=== [$id] exit $STEP_RC after $STEP_S s"
}

record() { # record ID OUTCOME FIGURE SECONDS: one row of the results table; the file is rewritten
  local fields=() field
  for field in "$@"; do fields+=("$(printf '%s' "$field" | tr '\t\n' '  ')"); done
  printf '%s\t%s\t%s\t%s\n' "${fields[@]}" >>"$ROWS"
  echo "=== [$1] $2${3:+ | $3} | $4 s"
  report
}

report() { # (re)write the results file from the rows so far; copy it into $OUT. REPORT_RC: 0 when all are ok
  local path
  path=$("$PYTHON" -m benchmarks.gpu_check report --rows "$ROWS" --env "$WORK/env.json" --dir "$RESULTS_DIR" \
    --bench-output "$WORK/a.out" --note "${1:-checks still running}" | tail -n 1)
  REPORT_RC=$?
  if [[ -f $path ]]; then
    echo "$path" >"$WORK/results_path"
    [[ -n ${OUT:-} ]] && cp -f "$path" "$OUT/"
  else
    echo "!!! the results file could not be written (see above)"
  fi
}

judge() { # judge ID [FOLDER]: record the verdict on the step just run (benchmarks/gpu_check.py decides)
  local id=$1 verdict
  if [[ $STEP_RC == budget ]]; then
    record "$id" "skipped: the $BUDGET_S s budget was spent (GPU_CHECK_BUDGET_S)" "" 0
    return
  fi
  verdict=$("$PYTHON" -m benchmarks.gpu_check judge "$id" "$WORK/$id.out" "$STEP_RC" "$STEP_LIMIT" ${2:+"$2"} |
    tail -n 1)
  [[ $verdict == *$'\t'* ]] || verdict="FAILED: exit $STEP_RC; no verdict could be formed (see the log)"$'\t'
  record "$id" "${verdict%%$'\t'*}" "${verdict#*$'\t'}" "$STEP_S"
}

wanted() { # wanted ID: false, with ID recorded as skipped, when it is not selected or there is no CUDA device
  if [[ -n ${GPU_CHECK_ONLY:-} && " ${GPU_CHECK_ONLY//,/ } " != *" $1 "* ]]; then
    record "$1" "skipped: not selected (GPU_CHECK_ONLY=$GPU_CHECK_ONLY)" "" 0
    return 1
  fi
  [[ -z $NO_CUDA || ${GPU_CHECK_ALLOW_CPU:-0} == 1 ]] && return 0
  record "$1" "skipped: $NO_CUDA" "" 0
  return 1
}

check_pixels() { # d
  wanted d || return
  run_step d 90 "$PYTHON" -m benchmarks.gpu_check pixels --device cuda --count 32 --size 64
  judge d
}

check_digits() { # b: the default run (resnet18, 10 epochs, 32 px) on one GPU
  wanted b || return
  run_step b 150 "$PYTHON" -m lightning_resnet trainer=gpu trainer.precision=bf16-mixed "hydra.run.dir=$WORK/digits"
  judge b "$WORK/digits"
}

check_ddp() { # e1, e2: one-process DDP (NCCL) for 1 epoch, then the same run resumed from last.ckpt
  local run=$WORK/ddp
  local args=(trainer=ddp trainer.devices=1 callbacks.reports=null "hydra.run.dir=$run")
  if wanted e1; then
    run_step e1 90 "$PYTHON" -m lightning_resnet "${args[@]}" trainer.max_epochs=1
    judge e1 "$run"
  fi
  wanted e2 || return
  if [[ ! -f $run/checkpoints/last.ckpt ]]; then
    record e2 "skipped: e1 left no checkpoints/last.ckpt to resume from" "" 0
    return
  fi
  run_step e2 90 "$PYTHON" -m lightning_resnet "${args[@]}" ckpt_path=last trainer.max_epochs=2
  judge e2 "$run"
}

check_sweep() { # c: n_jobs=1 on one GPU (conf/launcher/gpus.yaml would also give 1: one per visible GPU)
  wanted c || return
  run_step c 180 "$PYTHON" -m lightning_resnet -m launcher=gpus model=resnet18,resnet34 data.image_size=64 \
    trainer.max_epochs=2 hydra.launcher.n_jobs=1 callbacks.reports=null "hydra.sweep.dir=$WORK/sweep"
  judge c "$WORK/sweep"
}

check_bench() { # a: ResNet-50 at 224 px per precision/layout/compile setting, synthetic and real JPEGs
  wanted a || return
  # shellcheck disable=SC2086  # GPU_CHECK_BENCH_ARGS is a list of options
  run_step a 330 "$PYTHON" -m benchmarks --sections gpu ${GPU_CHECK_BENCH_ARGS:-}
  judge a
}

main() {
  echo "gpu_check $(date '+%F %T') on ${HOSTNAME:-?}, $PYTHON, budget $BUDGET_S s, work folder $WORK"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} # the checkout's packages, also in child processes
  export PYTHONUNBUFFERED=1                         # output in the log as it happens, kept if a step is killed
  install_wheels                                    # then /tmp/site:$PWD
  command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi
  run_step env 60 "$PYTHON" -m benchmarks.gpu_check env "$WORK/env.json"
  case $STEP_RC in
    0) NO_CUDA="" ;;
    3) NO_CUDA="no CUDA device visible to $PYTHON" ;;
    *) NO_CUDA="the environment check failed (exit $STEP_RC, see the log)" ;;
  esac
  check_pixels
  check_digits
  check_ddp
  check_sweep
  check_bench
  report "total $SECONDS s of a $BUDGET_S s budget; log: ${LOG##*/}"
  echo "$REPORT_RC" >"$WORK/status"
  if [[ -f $WORK/results_path ]]; then
    echo
    cat "$(<"$WORK/results_path")"
  fi
  echo "=== done in $SECONDS s: $(cat "$WORK/results_path" 2>/dev/null) and $LOG"
}

mkdir -p "$RESULTS_DIR" || exit 2
targets=("$LOG")
if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT" && targets+=("$OUT/${LOG##*/}")
fi
main 2>&1 | tee "${targets[@]}"
status=$(cat "$WORK/status" 2>/dev/null || echo 2) # 0: every check ok; 1: not; 2: the script itself broke
[[ ${GPU_CHECK_KEEP:-0} == 1 ]] || rm -rf "$WORK"
exit "$status"
