#!/usr/bin/env bash
# The test command of the README: notebooks and package in sync, notebooks clean, every stage notebook
# executed (nbdev-test), then pytest (CLI, pipeline, versions, cache, failures, Dask, papermill runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
[ -x .venv/bin/python ] || { echo "tests/run.sh: no .venv here; run the README's first command first" >&2; exit 1; }

snapshot() { find medwb nbs -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha256sum; }

# run a command that must change nothing under medwb/ and nbs/; otherwise name the files it changed and fail
unchanged_by() {
  local what="$1"; shift
  local before after
  before=$(snapshot); "$@"; after=$(snapshot)
  if [ "$before" != "$after" ]; then
    echo "FAIL: $* changed these files ($what; they are now updated: review and commit):" >&2
    diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
    exit 1
  fi
}

echo "== 1/4 medwb/ in sync with nbs/ (nbdev-export changes nothing)"
unchanged_by "medwb/ was out of sync with nbs/" nbdev-export

echo "== 2/4 notebooks clean (nbdev-clean changes nothing)"
unchanged_by "outputs or metadata were committed in notebooks" nbdev-clean

echo "== 3/4 nbdev-test: execute every stage notebook"
nbdev-test --n-workers 2 --timing

echo "== 4/4 pytest (two worker processes, pytest-xdist; a test file stays on one worker, so its module fixtures run once)"
set +e
python -m pytest -q -n "${MEDWB_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "FAIL: pytest collected no tests" >&2; exit 1; fi
exit $rc
