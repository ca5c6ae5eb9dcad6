#!/usr/bin/env bash
# Instructions per request of each hot-path variant, counted by valgrind's
# callgrind: repeatable to a few instructions from run to run, where timings
# on a shared virtual machine drift by 10 % or more.
#
#   benches/instructions.sh [variant...]     (default: the main six, and
#                                             the keyed request over 10,000
#                                             sessions)
#
# Needs valgrind (apt-get install valgrind). Each variant runs under
# criterion's --profile-time for 2 s; the count is callgrind's inclusive
# cost of criterion's timing loop divided by the requests it made.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
bin=$(cargo bench --bench hot_path --no-run 2>&1 \
    | grep -o 'target/release/deps/hot_path-[0-9a-f]*' | head -n 1)
[ -n "$bin" ] || { echo "could not build the hot_path bench" >&2; exit 1; }

variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
    variants=(bare add_authorization add_authorization_check_status ours_no_copy
              add_authorization_retry_copy ours_copy literal_port
              ours_no_copy_with_key sessions_keyed)
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for v in "${variants[@]}"; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$v" \
        "$bin" --bench --profile-time 2 "^hot_path/$v\$" >/dev/null 2>&1
    # Inclusive instructions of Bencher::iter, and how many times it called
    # the request builder (once per request).
    total=$(callgrind_annotate --inclusive=yes "$out/$v" 2>/dev/null \
        | awk '/Bencher<M>::iter \[/ && !done { gsub(",", "", $1); print $1; done = 1 }')
    calls=$(callgrind_annotate --tree=caller "$out/$v" 2>/dev/null | awk '
        /^$/ { n = "" }
        /< .*Bencher<M>::iter \(/ { n = $0; sub(/.*\(/, "", n); sub(/x\).*/, "", n); gsub(",", "", n) }
        /\* +[^ ]*hot_path::request \[/ && !done { print n; done = 1 }')
    awk -v v="$v" -v t="$total" -v n="$calls" \
        'BEGIN { printf "%-32s %8.0f instructions/request (%d requests)\n", v, t / n, n }'
done
