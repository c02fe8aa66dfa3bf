#!/usr/bin/env bash
# The root directory in which PostgreSQL VERSION runs, made on first need and
# reused: Debian's packages of that version (17 from Debian 13 "trixie", 18
# from Debian unstable "sid"), its server headers, gcc and make, installed by
# mmdebstrap from Debian's default mirror. Prints the root's path.
#
#   scripts/pg-root.sh 17          make (if missing) and print the root
#   scripts/pg-root.sh --path 17   print where the root is (or would be)
#   scripts/pg-root.sh --suite 17  print the Debian suite that ships it
#
# Roots live in $WALREDO_ROOTS (default /var/cache/walredo/roots), one
# directory per version (pg17, pg18), shared by every clone of the repository.
# Making one needs root privileges (mmdebstrap's chroot mode); it takes about
# two minutes and 1 to 2 GB each. Remove a root with `rm -rf` to remake it.
set -euo pipefail

roots="${WALREDO_ROOTS:-/var/cache/walredo/roots}"

suite_of() {
    case "$1" in
        17) echo trixie ;;
        18) echo sid ;;
        *) return 1 ;;
    esac
}

mode=make
case "${1:-}" in
    --path) mode=path; shift ;;
    --suite) mode=suite; shift ;;
esac
version="${1:?usage: scripts/pg-root.sh [--path|--suite] VERSION}"
suite="$(suite_of "$version")" || {
    echo "pg-root: no Debian suite ships PostgreSQL $version as a root here (17 and 18 do)" >&2
    exit 2
}
dir="$roots/pg$version"
case "$mode" in
    path) echo "$dir"; exit 0 ;;
    suite) echo "$suite"; exit 0 ;;
esac

# A finished root has its server and its PGXS; a half-made one is remade.
if [ -x "$dir/usr/lib/postgresql/$version/bin/postgres" ] &&
    [ -f "$dir/usr/include/postgresql/$version/server/postgres.h" ] &&
    [ -f "$dir/.walredo-root-done" ]; then
    echo "$dir"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "pg-root: making the PostgreSQL $version root needs root privileges: sudo scripts/pg-root.sh $version" >&2
    exit 3
fi
if ! command -v mmdebstrap >/dev/null; then
    echo "pg-root: installing mmdebstrap" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

mkdir -p "$roots"
tmp="$dir.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "pg-root: making $dir (Debian $suite, PostgreSQL $version); about two minutes" >&2
# postgresql-N creates the user postgres inside the root; lz4 and zstd come
# with the server (wal_compression). valgrind and libasan for the C tests.
packages="postgresql-$version,postgresql-server-dev-$version,gcc,make,libc6-dev,pkgconf,valgrind,procps"
# Unstable's Release file carries a Valid-Until a few days ahead; a mirror
# (or a clock) that is behind makes apt refuse it as expired. The packages are
# still signed and checked; only their freshness is not.
mmdebstrap --quiet --variant=apt --mode=root --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$packages" "$suite" "$tmp" >&2
# The server's own cluster is never used; its files only take space.
rm -rf "$tmp/var/lib/postgresql/$version" "$tmp/var/cache/apt/archives/"*.deb
touch "$tmp/.walredo-root-done"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "pg-root: $dir made in $(( $(date +%s) - start )) s, $(du -sh "$dir" | cut -f1)" >&2
echo "$dir"
