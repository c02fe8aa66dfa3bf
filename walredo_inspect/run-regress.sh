#!/usr/bin/env bash
# walredo_inspect's pg_regress tests (sql/*.sql against expected/*.out, the
# tests named by REGRESS in the Makefile) against a throw-away server that
# pg_regress --temp-instance starts from a private copy of the installation
# with this tree's extensions in it (as testkit's PrivateInstall: PostgreSQL
# finds extensions relative to its binary). As root, PostgreSQL runs as the
# postgres user. `make inspect-regress` runs it after `make build`; a
# difference fails it and prints regression.diffs (kept, with the results,
# in target/inspect-regress/).
#
# PG_VERSION=N: another version, inside its root (make PG_VERSION=N build
# first):  scripts/in-root.sh N env PG_VERSION=N walredo_inspect/run-regress.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
version="${PG_VERSION:-15}"
pg_lib="/usr/lib/postgresql/$version"
pg_share="/usr/share/postgresql/$version"
keep="$root/target/inspect-regress"
[ "$version" = 15 ] || keep="$keep-pg$version"
# Where make built the extensions for that version (testkit's built_dir).
built="$root"
[ "$version" = 15 ] || built="$root/target/pg$version"
tests="$(sed -n 's/^REGRESS *= *//p' "$here/Makefile")"
[ -n "$tests" ] || { echo "run-regress: no REGRESS in $here/Makefile" >&2; exit 2; }
for f in "$built/pg_walredo/pg_walredo.so" "$built/walredo_inspect/walredo_inspect.so"; do
    [ -f "$f" ] || { echo "run-regress: $f is missing: build it with make" >&2; exit 2; }
done

work="$(mktemp -d /tmp/walredo-inspect-regress.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
install="$work/install"
mkdir -p "$install/usr/lib/postgresql" "$install/usr/share/postgresql"
cp -a "$pg_lib" "$install/usr/lib/postgresql/"
cp -a "$pg_share" "$install/usr/share/postgresql/"
cp "$built/pg_walredo/pg_walredo.so" "$built/walredo_inspect/walredo_inspect.so" "$install$pg_lib/lib/"
cp "$here/walredo_inspect.control" "$here"/walredo_inspect--*.sql "$install$pg_share/extension/"
# The tests and their output where the server's user can read and write.
mkdir -p "$work/in" "$work/out"
cp -r "$here/sql" "$here/expected" "$here/regress.conf" "$work/in/"

as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$work/in" "$work/out"
    as_pg=(runuser -u postgres --)
fi
# 18's initdb turns data checksums on by default; the tests assume 15's
# default, off, as testkit's clusters (with them, the free-space map's hint
# writes are WAL-logged). PG_TEST_INITDB_EXTRA_OPTS: pg_regress 17 and later.
extra_initdb=""
[ "$version" -lt 18 ] || extra_initdb="--no-data-checksums"
status=0
(cd "$work/out" && "${as_pg[@]}" env LC_ALL=C PG_TEST_INITDB_EXTRA_OPTS="$extra_initdb" \
    "$install$pg_lib/lib/pgxs/src/test/regress/pg_regress" \
    --temp-instance="$work/out/instance" --bindir="$install$pg_lib/bin" \
    --inputdir="$work/in" --outputdir="$work/out" \
    --temp-config="$work/in/regress.conf" --dbname=contrib_regression \
    $tests) || status=$?
rm -rf "$keep"
mkdir -p "$keep"
cp -r "$work/out/results" "$keep/" 2>/dev/null || true
if [ "$status" != 0 ]; then
    if [ -f "$work/out/regression.diffs" ]; then
        cp "$work/out/regression.diffs" "$keep/"
        cat "$work/out/regression.diffs"
    fi
    cp -r "$work/out/log" "$keep/" 2>/dev/null || true
    echo "run-regress: walredo_inspect's pg_regress tests failed (see $keep)" >&2
    exit 1
fi
