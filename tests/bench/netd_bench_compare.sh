#!/usr/bin/env bash
# Runs two netd_bench binaries (e.g. the build before a change and after it) in alternation, so that
# both see the same machine: the ratio of their figures is what a noisy machine cannot fake.
#
#   tests/bench/netd_bench_compare.sh BEFORE_BENCH AFTER_BENCH [ROUNDS] [-- NETD_BENCH_ARGS...]
#
# Prints each run's table, labelled. docs/PERFORMANCE.md "## netd" has the figures and the commands.
set -euo pipefail
(($# >= 2)) || { echo "usage: $0 BEFORE_BENCH AFTER_BENCH [ROUNDS] [-- ARGS...]" >&2; exit 2; }
before=$1 after=$2
shift 2
rounds=2
if (($#)) && [[ $1 != -- ]]; then rounds=$1; shift; fi
[[ ${1:-} == -- ]] && shift
for ((round = 1; round <= rounds; round++)); do
  for label in before after; do
    bench=$before
    [[ $label == after ]] && bench=$after
    echo "== round $round, $label: $bench $*"
    "$bench" "$@"
  done
done
