#!/usr/bin/env bash
# PostgreSQL's own regression suite (src/test/regress of the source) with
# its regress.so built against PostgreSQL N's server, for pg_regress to run
# against a cluster: `bench --bulk`'s third workload (examples/bench/bulk.rs).
# The source is Debian's .orig.tar.bz2 of the release pinned below (the
# upstream tarball), fetched straight from the archive's pool, checked
# against its sha256 (the one the release's .dsc lists) and unpacked, only
# src/test/regress, into a cache; then copied to DEST and built there with
# PGXS (its Makefile: MODULES = regress).
#
#   scripts/pg-regress-suite.sh N DEST   fetch (if missing) and build in
#                                        DEST/regress; print that directory
#
# PostgreSQL N's pg_config: $PG_CONFIG, else scripts/pg-bindir.sh N's.
# pg_regress itself comes with the server's PGXS (postgresql-server-dev-N on
# Debian, or a pinned build's lib/pgxs): the suite needs it, and is refused
# without it. The expected output of a release other than the server's may
# differ in a few tests: the suite is a workload here, not a test.
#
# Exit status 3: not available here (no pinned source for N, no pg_regress,
# the archive unreachable); the caller skips, with the reason printed. The
# cache is $WALREDO_PG_CACHE/regress, else /var/cache/walredo/regress as
# root, else ${XDG_CACHE_HOME:-~/.cache}/walredo/regress (about 15 MB a
# release); remove a release's directory to fetch it again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Pinned: release, sha256 and sha1 of its .orig.tar.bz2 (postgresql-N_RELEASE).
# Debian's pool keeps the releases its suites carry; snapshot.debian.org
# keeps every file by its sha1 (the second address).
pinned() {
    case "$1" in
        15) echo "15.18 11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4 fab946980b8709a3caf476eb87a2980fcc0664e8" ;;
        *) return 1 ;;
    esac
}

unavailable() {
    echo "pg-regress-suite: $*" >&2
    exit 3
}

major="${1:?usage: scripts/pg-regress-suite.sh MAJOR DEST}"
dest="${2:?usage: scripts/pg-regress-suite.sh MAJOR DEST}"
read -r release sha sha1 < <(pinned "$major") ||
    unavailable "no pinned source of PostgreSQL $major's regression suite (15 is)"
pg_config="${PG_CONFIG:-$("$here/pg-bindir.sh" "$major")/pg_config}"
said="$("$pg_config" --version)"
[ "$(sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p' <<<"$said")" = "$major" ] || {
    echo "pg-regress-suite: $pg_config is $said, not PostgreSQL $major" >&2
    exit 1
}
pg_regress="$("$pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress"
[ -x "$pg_regress" ] ||
    unavailable "no $pg_regress (on Debian: apt-get install postgresql-server-dev-$major)"

if [ -n "${WALREDO_PG_CACHE:-}" ]; then
    cache="$WALREDO_PG_CACHE/regress"
elif [ "$(id -u)" = 0 ]; then
    cache=/var/cache/walredo/regress
else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/walredo/regress"
fi
suite="$cache/$release"
if ! [ -f "$suite/.walredo-done" ]; then
    command -v bzip2 >/dev/null || unavailable "no bzip2 to unpack the source with"
    tarball="postgresql-${major}_$release.orig.tar.bz2"
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/.fetch-$release.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    fetched=""
    for url in "http://deb.debian.org/debian/pool/main/p/postgresql-$major/$tarball" \
        "http://snapshot.debian.org/file/$sha1"; do
        echo "pg-regress-suite: fetching $url" >&2
        if command -v curl >/dev/null; then
            get=(curl -fsSL --retry 3 -o "$tmp/$tarball" "$url")
        else
            get=(python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])'
                "$url" "$tmp/$tarball")
        fi
        if "${get[@]}"; then
            fetched="$url"
            break
        fi
    done
    [ -n "$fetched" ] || unavailable "cannot fetch $tarball (no network?)"
    echo "$sha  $tmp/$tarball" | sha256sum --check --quiet || {
        echo "pg-regress-suite: $fetched does not have the pinned sha256 $sha: refused" >&2
        exit 1
    }
    mkdir "$tmp/unpacked"
    tar -xjf "$tmp/$tarball" -C "$tmp/unpacked" --no-same-owner --strip-components=4 \
        "postgresql-$release/src/test/regress"
    chmod -R u+rwX,go+rX,go-w "$tmp/unpacked"
    touch "$tmp/unpacked/.walredo-done"
    rm -rf "$suite"
    mv "$tmp/unpacked" "$suite"
    chmod 755 "$cache" "$suite"
fi

# A private copy, regress.so built in it against this server.
rm -rf "$dest/regress"
mkdir -p "$dest"
cp -a "$suite" "$dest/regress"
cat >"$dest/regress/Makefile.walredo" <<'EOF'
MODULES = regress
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
EOF
make -s -C "$dest/regress" -f Makefile.walredo PG_CONFIG="$pg_config" with_llvm=no >&2
# The triggers test loads contrib/spi's autoinc and refint from the same
# directory (PG_LIBDIR, pg_regress's --dlpath): the server's, when it has them.
for lib in autoinc refint; do
    so="$("$pg_config" --pkglibdir)/$lib.so"
    [ -f "$so" ] && cp "$so" "$dest/regress/"
done
echo "$dest/regress"
