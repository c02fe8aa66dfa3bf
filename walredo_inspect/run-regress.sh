#!/usr/bin/env bash
# walredo_inspect's pg_regress tests (sql/*.sql against expected/*.out, the
# tests named by REGRESS in the Makefile) against a throw-away server that
# pg_regress --temp-instance starts from a private copy of the installation
# with this tree's extensions in it (as testkit's PrivateInstall: PostgreSQL
# finds extensions relative to its binary, so its bin, lib and share
# directories, where its pg_config says, are copied each to its own path
# under the copy's root). As root, PostgreSQL runs as the postgres user.
# `make inspect-regress` runs it after `make build`; a difference fails it
# and prints regression.diffs (kept, with the results, in
# target/inspect-regress/).
#
# WALREDO_PG_VERSION=N and WALREDO_PG_BINDIR=DIR (the Makefile sets both
# for PG_VERSION=N; build with `make PG_VERSION=N` first): another version,
# the one whose programs are in DIR (default /usr/lib/postgresql/N/bin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
version="${WALREDO_PG_VERSION:-15}"
bindir="${WALREDO_PG_BINDIR:-/usr/lib/postgresql/$version/bin}"
[ -x "$bindir/pg_config" ] || { echo "run-regress: no pg_config in $bindir" >&2; exit 2; }
mapfile -t dirs < <("$bindir/pg_config" --bindir --pkglibdir --sharedir)
pg_bin="${dirs[0]}" pg_pkglib="${dirs[1]}" pg_share="${dirs[2]}"
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
for dir in "$pg_bin" "$pg_pkglib" "$pg_share"; do
    [ -e "$install$dir" ] && continue
    mkdir -p "$(dirname "$install$dir")"
    cp -a "$dir" "$install$dir"
done
cp "$built/pg_walredo/pg_walredo.so" "$built/walredo_inspect/walredo_inspect.so" "$install$pg_pkglib/"
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
    "$install$pg_pkglib/pgxs/src/test/regress/pg_regress" \
    --temp-instance="$work/out/instance" --bindir="$install$pg_bin" \
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
