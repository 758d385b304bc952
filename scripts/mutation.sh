#!/usr/bin/env bash
# Mutation testing of the modules where a silent error changes results (docs/MUTATION.md).
# Not part of the CI test command: it is slow (minutes per module) and writes only under $MUT_ROOT.
#
#   scripts/mutation.sh                      # every module
#   scripts/mutation.sh objectives passk     # some of them
#   MUT_ROOT=/tmp/mut MUT_CHILDREN=1 scripts/mutation.sh data
#   MUT_FILTER='*' scripts/mutation.sh graders   # every function of graders.py, not only the comparisons
#
# Each module runs mutmut 3 in its own scratch copy of the repository ($MUT_ROOT/<module>, made with
# tar, without .git and .venv) with the repository's venv, on that module's fast unit tests only.
# mutmut writes the mutated package to <copy>/mutants/ and puts it first on sys.path, ahead of the
# editable install of the repository (setuptools' editable finder sits after the path finder), so
# the tests import the mutants. Results: $MUT_ROOT/<module>/summary.txt and survivors.txt.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
MUTMUT="${MUTMUT:-$(dirname "$PY")/mutmut}"
MUT_ROOT="${MUT_ROOT:-/tmp/mut}"
CHILDREN="${MUT_CHILDREN:-1}"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# one thread per test process: mutmut's timeout is a CPU-time limit (SIGXCPU), which torch's thread pool
# would reach on a surviving mutant of a 15 s test file; MUT_TIMEOUT_S is added to each test estimate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
TIMEOUT_S="${MUT_TIMEOUT_S:-20}"

# module -> files to mutate | tests | mutant-name filter (glob, empty = all) | process isolation
spec() {
  case "$1" in
    objectives) echo "megatron_redi/objectives/losses.py megatron_redi/objectives/objective.py megatron_redi/objectives/sums.py|tests/objectives/test_losses.py tests/objectives/test_logprobs.py tests/objectives/test_*_mutants.py tests/objectives/test_objective_*.py||fork" ;;
    logprobs)   echo "megatron_redi/objectives/logprobs.py|tests/objectives/test_logprobs.py tests/objectives/test_logprob_*.py||fork" ;;
    data)       echo "megatron_redi/data/batch.py megatron_redi/data/sampler.py megatron_redi/data/dataset.py|tests/data/test_batch.py tests/data/test_dataset.py tests/data/test_packing_*.py tests/data/test_sampler_*.py|megatron_redi.data.batch.* megatron_redi.data.sampler.* megatron_redi.data.dataset.x_first_fit_decreasing* megatron_redi.data.dataset.x_make_micro_batches* megatron_redi.data.dataset.x_make_packed_micro_batches* megatron_redi.data.dataset.x_pad_multiple*|fork" ;;
    optimizer)  echo "megatron_redi/training/optimizer.py|tests/training/test_schedule.py tests/training/test_optimizer.py tests/training/test_lr_*.py||forkserver" ;;
    passk)      echo "megatron_redi/evaluation/passk.py|tests/evaluation/test_eval_passk.py tests/evaluation/test_passk_*.py||fork" ;;
    # graders: the answer-comparison functions only by default (the whole file is ~1000 mutants, ~25 min);
    # MUT_FILTER='*' runs all of it
    graders)    echo "megatron_redi/grading/graders.py|tests/grading/test_graders.py tests/grading/test_grader_*.py|megatron_redi.grading.graders.x_rllm_equal* megatron_redi.grading.graders.x__sympy_equal* megatron_redi.grading.graders.x__strip_thousands* megatron_redi.grading.graders.x__is_int_string* megatron_redi.grading.graders.x__split_tuple* megatron_redi.grading.graders.x__is_fraction* megatron_redi.grading.graders.x_gold_text* megatron_redi.grading.graders.x__strip_dollars*|fork" ;;
    *) echo "unknown module $1 (objectives logprobs data optimizer passk graders)" >&2; exit 2 ;;
  esac
}

MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=(objectives logprobs data optimizer passk graders)

for mod in "${MODULES[@]}"; do
  IFS='|' read -r files tests filter isolation <<<"$(spec "$mod")"
  filter="${MUT_FILTER:-$filter}"
  [ "$filter" = "*" ] && filter=""
  dir="$MUT_ROOT/$mod"
  rm -rf "$dir" && mkdir -p "$dir"
  tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./mutants --exclude=__pycache__ -cf - . \
    | tar -C "$dir" -xf -
  # only test files that exist (the glob patterns name the added mutation-killing tests)
  sel=()
  for t in $tests; do for f in $dir/$t; do [ -e "$f" ] && sel+=("\"${f#"$dir"/}\""); done; done
  only=()
  for f in $files; do only+=("\"$f\""); done
  {
    echo
    echo "[tool.mutmut]"
    echo "source_paths = [\"megatron_redi\"]"
    echo "only_mutate = [$(IFS=,; echo "${only[*]}")]"
    echo "pytest_add_cli_args_test_selection = [$(IFS=,; echo "${sel[*]}")]"
    echo "pytest_add_cli_args = [\"-p\", \"no:cacheprovider\", \"-x\", \"-q\"]"
    echo "also_copy = [\"tests/\", \"tools/\", \"examples/\", \"pretrain_redi.py\"]"
    echo "process_isolation = \"$isolation\""
    echo "use_git_change_detection = false"
    echo "timeout_constant = $TIMEOUT_S"
    echo "timeout_multiplier = 2.0"
  } >>"$dir/pyproject.toml"
  echo "=== $mod: mutate $files; tests ${sel[*]}"
  # shellcheck disable=SC2086
  (cd "$dir" && "$MUTMUT" run --max-children "$CHILDREN" $filter) >"$dir/mutmut.log" 2>&1 || {
    echo "mutmut failed for $mod, see $dir/mutmut.log" >&2; tail -30 "$dir/mutmut.log" >&2; continue; }
  (cd "$dir" && "$PY" - "$filter" <<'EOF'
import fnmatch, json, sys
from collections import Counter, defaultdict
from pathlib import Path
from mutmut.stats import status_by_exit_code

patterns = sys.argv[1].split()
per_file, survivors = defaultdict(Counter), []
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    src = str(meta.relative_to("mutants"))[: -len(".meta")]
    for name, code in codes.items():
        if patterns and not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        status = status_by_exit_code[code]
        per_file[src][status] += 1
        if status not in ("killed", "timeout", "caught by type check"):
            survivors.append(f"{name}: {status}")
with open("summary.txt", "w") as out:
    for src, c in per_file.items():
        total = sum(c.values())
        score = (c["killed"] + c["timeout"]) / total if total else 1.0
        line = (f"{src}: total {total} killed {c['killed']} survived {c['survived']} timeout {c['timeout']} "
                f"no-tests {c['no tests']} other {total - c['killed'] - c['survived'] - c['timeout'] - c['no tests']}"
                f" score {score:.1%}")
        print(line)
        out.write(line + "\n")
Path("survivors.txt").write_text("".join(s + "\n" for s in survivors))
print(f"{len(survivors)} survivors listed in {Path('survivors.txt').resolve()}")
EOF
  )
done
