#!/usr/bin/env bash
# Runs the cargo fuzz targets for a while each: `fuzz/run.sh [SECONDS] [TARGET...]`
# (default 45 s per target, every target). Installs cargo-fuzz when missing, and, as root, a
# C/C++ toolchain for libFuzzer. Uses a nightly toolchain when rustup has one, else stable with
# RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags).
#
# The committed seeds (fuzz/seeds/TARGET) are read, never written; what the fuzzer learns goes
# to a working corpus under the target dir ($CARGO_TARGET_DIR, else fuzz/target), which later
# runs reuse, and a crash input to fuzz/artifacts/TARGET/. Exit status 1 when a target found one.
#
# Environment: FUZZ_SANITIZER (default none: the crate has no unsafe code and the findings
# that matter are panics, overflows under debug assertions, hangs and memory blowups; set
# address for ASan), FUZZ_JOBS (parallel fuzzing processes per target, default 1).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
seconds="${1:-45}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(nflog_decode manifests)
fi
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

# A C and C++ compiler for libFuzzer (installed when run as root), and Rust.
. "$here/../integration/lib/packages.sh"
knp_need_packages cc:build-essential c++:build-essential
knp_need_cargo

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    echo "==> no nightly toolchain: stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

target_dir="${CARGO_TARGET_DIR:-$here/target}"
cd "$here"
echo "==> building the fuzz targets (sanitizer: $sanitizer)"
cargo "${toolchain[@]}" fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir"

parallel=()
if [ "$jobs" -gt 1 ]; then
    parallel=(-jobs="$jobs" -workers="$jobs")
fi

status=0
for target in "${targets[@]}"; do
    corpus="$target_dir/fuzz-corpus/$target"
    artifacts="$here/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "==> fuzzing $target for ${seconds}s (corpus $corpus)"
    log="$target_dir/fuzz-$target.log"
    if cargo "${toolchain[@]}" fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" \
        "$target" "$corpus" "$here/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        "${parallel[@]}" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1; then
        grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 5 "$log"
    else
        grep -B2 -A6 -E 'panicked|ERROR: libFuzzer' "$log" | grep -vE '^\s+(at |[0-9]+: )' | head -n 40
        echo "FUZZ FAILURE: $target; crash inputs in $artifacts; full output in $log" >&2
        status=1
    fi
done
exit "$status"
