#!/usr/bin/env bash
# Set up .venv/ if needed and run the whole test suite (extra arguments go to pytest).
# The dashboard tests drive a real headless Chromium: Debian's chromium + chromium-driver are
# installed here when missing (needs root, as on CI; otherwise install them yourself).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium and chromium-driver for the dashboard browser tests" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "test: chromedriver not found; the dashboard browser tests will fail." \
         "Install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)" >&2
  fi
fi
export FER_NO_PROGRESS=1
# Tests run side by side in FER_TEST_WORKERS processes (pytest-xdist, default 2): most of the suite's time
# waits on Ray start-up and sweep clocks, not on the CPU, so two workers nearly halve it even on 2 cores.
# FER_TEST_WORKERS=0 runs everything in this one process (for -s, --pdb); a -n of your own wins.
workers=${FER_TEST_WORKERS:-2}
case "$workers" in
  ''|*[!0-9]*) echo "test: FER_TEST_WORKERS must be a whole number (0 = no workers), got '$workers'" >&2; exit 2 ;;
esac
parallel=()
[ "$workers" -gt 0 ] && parallel=(-n "$workers" --dist worksteal)
exec .venv/bin/python -m pytest ${parallel[@]+"${parallel[@]}"} "$@"
