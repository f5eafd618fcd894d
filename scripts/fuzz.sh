#!/bin/sh
# Runs every libFuzzer harness for SECONDS each (FUZZ_TARGETS to choose),
# from its seed corpus in Fuzz/corpus/NAME, new inputs kept in a temporary
# directory. A crash, a leak or a timeout fails the run; its input is kept
# in Fuzz/artifacts/ to become a regression test. Prints executions and
# edges covered per harness; a harness whose code shows no coverage fails.
# usage: scripts/fuzz.sh BINARY SECONDS [JOBS]
set -u
bin=$1; seconds=$2; jobs=${3:-1}
targets=${FUZZ_TARGETS:-"ethernet ipv4 ipv6 nd gre esp tcp bpf ike stack config control"}
# No allocation stack traces (twice the speed for the allocating harnesses,
# config and control); to see where a crashing input's memory came from,
# run it again with ASAN_OPTIONS=malloc_context_size=30.
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0}
# FUZZ_WORK=DIR keeps what the runs find in DIR/NAME, so a later run goes on from there.
if [ -n "${FUZZ_WORK:-}" ]; then
    work=$FUZZ_WORK; mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p Fuzz/artifacts
status=0
printf '%-10s %14s %10s %7s %s\n' harness executions exec/s edges result
for t in $targets; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    # Inputs that once failed (FUZZING.md) run first, each once.
    if [ -d Fuzz/regressions/"$t" ] && [ -n "$(ls Fuzz/regressions/"$t")" ]; then
        if ! FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no "$bin" Fuzz/regressions/"$t"/* >"$log.regressions" 2>&1; then
            echo "$t: a regression input fails again" >&2; tail -30 "$log.regressions" >&2; status=1
        fi
    fi
    if [ "$jobs" -gt 1 ]; then
        FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
            -jobs="$jobs" -workers="$jobs" -artifact_prefix=Fuzz/artifacts/"$t"- "$work/$t" Fuzz/corpus/"$t" >"$log" 2>&1
        rc=$?
        cat fuzz-*.log >>"$log" 2>/dev/null; rm -f fuzz-*.log
    else
        FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
            -artifact_prefix=Fuzz/artifacts/"$t"- "$work/$t" Fuzz/corpus/"$t" >"$log" 2>&1
        rc=$?
    fi
    execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
    rate=$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{s += $2} END {print s + 0}')
    edges=$(grep -ho 'cov: [0-9]*' "$log" | awk '$2 > m {m = $2} END {print m + 0}')
    # Coverage from C code alone (libyaml, BoringSSL) still prints counters:
    # a harness whose inputs never add coverage means the Swift code is blind.
    if ! grep -q 'inline 8-bit counters' "$log" || grep -q 'no interesting inputs were found' "$log" || [ "$edges" -eq 0 ]; then
        echo "$t: no coverage from the harness's code (is the Swift code built with -sanitize-coverage?)" >&2; rc=1
    fi
    if [ $rc -eq 0 ]; then result=ok; else result="FAILED ($rc)"; status=1; tail -40 "$log" >&2; fi
    printf '%-10s %14s %10s %7s %s\n' "$t" "$execs" "$rate" "$edges" "$result"
done
exit $status
