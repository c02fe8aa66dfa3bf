#!/usr/bin/env bash
# Build and run the C tests of libwalredo: against the shared library, the
# static library, the static library with ASan/UBSan, and the shared library
# under valgrind. Stops at the first failure (non-zero exit).
#
#   c_tests/run.sh
#
# Build outputs go to target/c_tests/; fixtures to target/c_tests/fixtures
# (generated with testkit's make-fixtures when case-000.bin is missing).
# C_TESTS_NO_LIB_BUILD=1 skips `cargo build` and uses the libraries already in
# target/release (e.g. while someone else's edit of src/ does not compile).
# Every pool names its server: WALREDO_PG_VERSION (15 if unset) and
# WALREDO_PG_BINDIR (else /usr/lib/postgresql/N/bin), which the Makefile
# sets (c_tests/pools.c). WALREDO_PG_VERSION=N not 15 (`make check-version`
# runs it so, with C_TESTS_NO_LIB_BUILD=1 and the testkit's programs built):
# the real-page part only, test_redo, test_wal, test_pages and test_server
# on the shared build, against fixtures made with that version's server and
# its pg_walredo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/target/c_tests"
REL="$ROOT/target/release"
EXT="$ROOT/pg_walredo/pg_walredo.so"
PG_VERSION="${WALREDO_PG_VERSION:-15}"
if [ "$PG_VERSION" != 15 ]; then
    BUILD="$ROOT/target/c_tests/pg$PG_VERSION"
    EXT="$ROOT/target/pg$PG_VERSION/pg_walredo/pg_walredo.so"
fi
# The server every pool names (c_tests/pools.c), as the Makefile finds it.
WALREDO_PG_BINDIR="${WALREDO_PG_BINDIR:-$("$ROOT/scripts/pg-bindir.sh" "$PG_VERSION")}"
export WALREDO_PG_VERSION="$PG_VERSION" WALREDO_PG_BINDIR
FIXTURES="$BUILD/fixtures"
WAL_FIXTURE="$BUILD/wal-fixture"
PAGES_FIXTURE="$BUILD/pages-fixture"
SERVER_FIXTURE="$BUILD/server-fixture"
CC="${CC:-gcc}"
CFLAGS=(-std=gnu99 -Wall -Wextra -Werror -g -I "$ROOT/include" -I "$ROOT/c_tests")
SAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -g -O1)
STATIC_LIBS=(-lpthread -ldl -lm)

stage() { printf '\n=== run.sh: %s\n' "$*"; }
pass() { printf '=== run.sh: %s: OK\n' "$*"; }

cd "$ROOT"
mkdir -p "$BUILD"

if [ "${C_TESTS_NO_LIB_BUILD:-0}" = 1 ]; then
    stage "library: using the existing build (C_TESTS_NO_LIB_BUILD=1)"
else
    stage "library: make extension && cargo build --release -p walredo"
    make -s -C "$ROOT" extension PG_VERSION="$PG_VERSION" >/dev/null
    cargo build --release --quiet -p walredo
fi
for f in "$REL/libwalredo.so" "$REL/libwalredo.a" "$EXT"; do
    [ -f "$f" ] || { echo "run.sh: $f is missing after the build" >&2; exit 1; }
done
pass "library"

# Fixtures hold pages the server wrote: another server (another minor
# release, another build) makes them again.
SERVER="$WALREDO_PG_BINDIR: $("$WALREDO_PG_BINDIR/postgres" --version)"
if [ "$(cat "$BUILD/fixtures-server" 2>/dev/null)" != "$SERVER" ]; then
    rm -rf "$FIXTURES" "$WAL_FIXTURE" "$PAGES_FIXTURE" "$SERVER_FIXTURE"
    echo "$SERVER" > "$BUILD/fixtures-server"
fi

stage "fixtures in $FIXTURES"
# With C_TESTS_NO_LIB_BUILD=1, the testkit's programs built before.
testkit_bin() {
    if [ "${C_TESTS_NO_LIB_BUILD:-0}" = 1 ] && [ -x "$REL/$1" ]; then
        "$REL/$1" "${@:2}"
    else
        cargo run --release --quiet -p walredo-testkit --bin "$1" -- "${@:2}"
    fi
}
if [ ! -f "$FIXTURES/case-000.bin" ]; then
    testkit_bin make-fixtures "$FIXTURES"
fi
[ -f "$FIXTURES/case-000.bin" ] || { echo "run.sh: no fixtures in $FIXTURES" >&2; exit 1; }
pass "fixtures ($(ls "$FIXTURES" | grep -c '^case-[0-9]*\.bin$') cases)"

stage "WAL fixture in $WAL_FIXTURE"
if [ ! -f "$WAL_FIXTURE/expected.bin" ]; then
    testkit_bin make-wal-fixture "$WAL_FIXTURE"
fi
pass "WAL fixture"

stage "pages fixture in $PAGES_FIXTURE"
if [ ! -f "$PAGES_FIXTURE/waldump.txt" ]; then
    testkit_bin make-pages-fixture "$PAGES_FIXTURE"
fi
pass "pages fixture"

stage "server fixture in $SERVER_FIXTURE"
if [ ! -f "$SERVER_FIXTURE/records.bin" ]; then
    testkit_bin make-server-fixture "$SERVER_FIXTURE"
fi
pass "server fixture"

# Every test program, and the arguments it runs with. test_chaos takes the
# seconds of chaos and the number of soak requests: the full run is on the
# shared build; the other builds get a short one.
TESTS=(test_api test_redo test_pool test_chaos test_storm test_lifecycle test_host_death test_call test_wal test_pages test_server test_pid1)
# test_storm takes its seconds and the most requests that may fail, per
# mille: 0.1% is asserted on the full native run only (20 s, where it saw 0
# failures in 100,000 requests on a busy 2-core machine); the short and the
# instrumented runs check that no request fails before its deadline.
storm_args() {
    if [ "$1" = shared ] && [ -z "${WALREDO_TEST_UNDER_VALGRIND:-}" ]; then
        echo "${STORM_SECONDS:-20} 1"
    else
        echo "4"
    fi
}
args_for() {
    case "$1" in
        test_api) echo "$EXT" ;;
        test_chaos) echo "$EXT $FIXTURES ${2:-3 5000}" ;;
        test_storm) echo "$EXT $FIXTURES $(storm_args "$3")" ;;
        test_wal) echo "$EXT $WAL_FIXTURE" ;;
        test_pages) echo "$PAGES_FIXTURE" ;;
        test_server) echo "$EXT $SERVER_FIXTURE" ;;
        *) echo "$EXT $FIXTURES" ;;
    esac
}
sources_for() {
    case "$1" in
        test_api | test_wal | test_server) echo "c_tests/$1.c c_tests/pools.c" ;;
        test_pages) echo "c_tests/$1.c" ;;
        *) echo "c_tests/$1.c c_tests/fixture.c c_tests/children.c c_tests/pools.c c_tests/workload.c" ;;
    esac
}
# run VARIANT TEST [CHAOS_ARGS] [wrapper...]
run_test() {
    local variant=$1 t=$2 chaos=$3
    shift 3
    stage "($variant) $t"
    # shellcheck disable=SC2046
    "$@" "$BUILD/$t.$variant" $(args_for "$t" "$chaos" "$variant")
    pass "($variant) $t"
}

stage "(a) compile against the shared library"
for t in "${TESTS[@]}" test_pkgconfig; do
    # shellcheck disable=SC2046
    "$CC" "${CFLAGS[@]}" -O2 $(sources_for "$t") -o "$BUILD/$t.shared" \
        -L "$REL" -lwalredo -Wl,-rpath,"$REL" -lpthread
done
"$BUILD/test_pkgconfig.shared"
pass "(a) compile (shared)"
if [ "$PG_VERSION" != 15 ]; then
    for t in test_redo test_wal test_pages test_server; do
        run_test shared "$t" ""
    done
    printf '\n=== run.sh: PostgreSQL %s: real-page tests passed\n' "$PG_VERSION"
    exit 0
fi
for t in "${TESTS[@]}"; do
    run_test shared "$t" "${CHAOS_SECONDS:-20} ${SOAK_REQUESTS:-100000}"
done

stage "(b) compile statically against libwalredo.a"
for t in "${TESTS[@]}"; do
    # shellcheck disable=SC2046
    "$CC" "${CFLAGS[@]}" -O2 $(sources_for "$t") "$REL/libwalredo.a" \
        -o "$BUILD/$t.static" "${STATIC_LIBS[@]}"
done
if ldd "$BUILD/test_api.static" | grep -q libwalredo; then
    echo "run.sh: test_api.static is linked to libwalredo.so" >&2; exit 1
fi
pass "(b) compile (static)"
for t in "${TESTS[@]}"; do
    run_test static "$t" "3 5000"
done

stage "(c) compile with -fsanitize=address,undefined, static"
for t in "${TESTS[@]}"; do
    # shellcheck disable=SC2046
    "$CC" "${CFLAGS[@]}" "${SAN[@]}" $(sources_for "$t") "$REL/libwalredo.a" \
        -o "$BUILD/$t.asan" "${STATIC_LIBS[@]}"
done
pass "(c) compile (ASan/UBSan)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
if [ -s "$ROOT/c_tests/lsan.supp" ]; then
    export LSAN_OPTIONS="suppressions=$ROOT/c_tests/lsan.supp:print_suppressions=1"
fi
for t in "${TESTS[@]}"; do
    run_test asan "$t" "5 5000"
done
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

# Definite leaks are errors. "Possibly lost" is not shown: Rust's std keeps
# a 48-byte handle for each C thread that calls in, on purpose, until exit.
VALGRIND=(valgrind -q --error-exitcode=1 --leak-check=full --show-possibly-lost=no
          --errors-for-leak-kinds=definite --track-fds=no)
# valgrind runs the shared build; test_chaos gets a short run there, and
# knows it is under valgrind (see under_valgrind() there).
export WALREDO_TEST_UNDER_VALGRIND=1
for t in "${TESTS[@]}"; do
    run_test shared "$t" "4 1000" "${VALGRIND[@]}"
done
unset WALREDO_TEST_UNDER_VALGRIND

printf '\n=== run.sh: all stages passed\n'
