#!/usr/bin/env bash
# Runs one fuzz target with the limits documented in docs/fuzzing.md.
#   fuzz/run.sh TARGET [SECONDS] [more libFuzzer flags...]
# SECONDS defaults to 600; 0 runs until stopped. Seed first with fuzz/seed.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]}"
secs="${2:-600}"
shift $(($# >= 2 ? 2 : 1))

# Largest input worth trying, per target (why: docs/fuzzing.md, "Limits").
case "$target" in
ct_slice | ct_frame | rtstruct) max_len=1048576 ;;
rtplan | rtrecord) max_len=262144 ;;
config) max_len=16384 ;;
spatial_registration) max_len=65536 ;;
link_decode) max_len=2048 ;;
audit_log | audit_verify) max_len=65536 ;;
*) echo "unknown target $target" >&2; exit 2 ;;
esac
dict=()
[ "$target" != config ] && [ "$target" != link_decode ] && [ "$target" != audit_log ] && [ "$target" != audit_verify ] && dict=(-dict="$here/dicom.dict")

cd "$here"
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
RUSTC_BOOTSTRAP=1 exec nice -n 10 cargo fuzz run "$target" "corpus/$target" -- \
    -max_len="$max_len" -rss_limit_mb=2048 -timeout=30 -max_total_time="$secs" \
    -print_final_stats=1 "${dict[@]}" "$@"
