#!/usr/bin/env bash
# make bench: aifs against the local disk, one table (see tests/src/bin/aifs-bench.rs).
# Pass options through BENCH_ARGS, e.g. BENCH_ARGS="--size-mib 1024 --runs 1".
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" -eq 0 ] || echo "note: not root: caches cannot be dropped and FUSE may refuse allow_other" >&2
# shellcheck disable=SC2086
exec "$ROOT/target/release/aifs-bench" --plots "$ROOT/target/bench" ${BENCH_ARGS:-}
