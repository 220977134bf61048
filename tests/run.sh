#!/usr/bin/env bash
# The test command of the README: notebooks and package in sync, notebooks clean, every stage notebook
# executed (nbdev-test), then pytest (CLI, pipeline, versions, cache, failures, Dask, papermill runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
[ -x .venv/bin/python ] || { echo "tests/run.sh: no .venv here; run the README's first command first" >&2; exit 1; }

snapshot() { find medwb nbs -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha256sum; }

echo "== 1/4 medwb/ in sync with nbs/ (nbdev-export changes nothing)"
before=$(snapshot); nbdev-export; after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-export changed these files: medwb/ was out of sync with nbs/ (they are now updated; review and commit):" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
  exit 1
fi

echo "== 2/4 notebooks clean (nbdev-clean changes nothing)"
before=$(snapshot); nbdev-clean; after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-clean changed these notebooks (outputs or metadata were committed; now cleaned, review and commit):" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
  exit 1
fi

echo "== 3/4 nbdev-test: execute every stage notebook"
nbdev-test --n-workers 2 --timing

echo "== 4/4 pytest"
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "FAIL: pytest collected no tests" >&2; exit 1; fi
exit $rc
