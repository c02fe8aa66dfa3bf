#!/usr/bin/env bash
# What building and testing walredo needs on Debian 12, for PostgreSQL VERSION
# (default 15):
#
#   scripts/ensure-deps.sh [VERSION]          install what is missing (as root,
#                                             or with password-less sudo), else
#                                             say the one command that would
#   scripts/ensure-deps.sh --check [VERSION]  install nothing: exit 1 with the
#                                             one command to run when something
#                                             `make` needs to build is missing
#
# `make demo` and `make check` (through `make deps`) install; `make`, `make
# build` and `make install` only check. Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

mode=install
[ "${1:-}" = --check ] && { mode=check; shift; }
version="${1:-15}"
default_pg_config="/usr/lib/postgresql/$version/bin/pg_config"
pg_config="${PG_CONFIG:-$default_pg_config}"

# Where PostgreSQL $version builds and runs: on this machine when installed
# here (or when it is 15, Debian 12's own), else in a root of its own (17, 18:
# scripts/pg-root.sh), as the Makefile decides.
if [ "$version" = 15 ] || [ -x "/usr/lib/postgresql/$version/bin/postgres" ] ||
    ! "$here/pg-root.sh" --suite "$version" >/dev/null 2>&1; then
    where=host
else
    where=root
fi

# Build: a C compiler (also the Rust linker's), make, and PostgreSQL's
# pg_config, PGXS and server headers. Tests and the demo add the server,
# pkg-config, g++ (libFuzzer, for the fuzz targets) and valgrind.
packages=()
command -v gcc >/dev/null || packages+=(gcc)
command -v make >/dev/null || packages+=(make)
if [ "$where" = host ]; then
    if [ -x "$pg_config" ]; then
        # pg_config comes with the client package; PGXS and the headers do not.
        [ -f "$("$pg_config" --pgxs)" ] && [ -f "$("$pg_config" --includedir-server)/postgres.h" ] ||
            packages+=("postgresql-server-dev-$version")
    elif [ "$pg_config" != "$default_pg_config" ]; then
        echo "ensure-deps: PG_CONFIG=$pg_config is not a program: point PG_CONFIG at PostgreSQL $version's pg_config" >&2
        exit 1
    else
        packages+=("postgresql-server-dev-$version")
    fi
fi
if [ "$mode" = install ]; then
    [ -x /usr/lib/postgresql/15/bin/postgres ] || packages+=(postgresql-15)
    [ -f /usr/include/postgresql/15/server/postgres.h ] || packages+=(postgresql-server-dev-15)
    [ "$where" = host ] && [ ! -x "/usr/lib/postgresql/$version/bin/postgres" ] &&
        packages+=("postgresql-$version")
    command -v g++ >/dev/null || packages+=(g++)
    command -v pkg-config >/dev/null || packages+=(pkgconf)
    command -v valgrind >/dev/null || packages+=(valgrind)
fi
mapfile -t packages < <(printf '%s\n' ${packages[@]+"${packages[@]}"} | sed '/^$/d' | sort -u)

# Only Debian 12's own PostgreSQL is in its archive; others come from
# apt.postgresql.org (or, for 17 and 18, a root: PG_VERSION=17).
hint=""
[ "$version" != 15 ] && [ "$where" = host ] && hint=" (PostgreSQL $version: from apt.postgresql.org)"
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

# PostgreSQL 17 and 18 build and run in a root of their own (about two
# minutes and 1 to 2 GB to make, once; root privileges).
if [ "$where" = root ]; then
    root="$("$here/pg-root.sh" --path "$version")"
    if [ "$mode" = install ]; then
        "$here/pg-root.sh" "$version" >/dev/null
    elif [ ! -f "$root/.walredo-root-done" ]; then
        echo "ensure-deps: PostgreSQL $version builds in a root of its own, not made yet ($root); make it with:" >&2
        echo "    ${sudo}scripts/pg-root.sh $version" >&2
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
