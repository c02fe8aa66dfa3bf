#!/usr/bin/env bash
# Install what building and testing walredo needs on Debian 12, or say the one
# command that would. Called by `make`; safe to run again.
set -euo pipefail

packages=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || packages+=(postgresql-15)
# pgxs.mk alone comes with the client package; the server headers do not.
[ -f /usr/lib/postgresql/15/lib/pgxs/src/makefiles/pgxs.mk ] &&
    [ -f /usr/include/postgresql/15/server/postgres.h ] || packages+=(postgresql-server-dev-15)
command -v gcc >/dev/null || packages+=(gcc)
command -v g++ >/dev/null || packages+=(g++)   # libFuzzer, for the fuzz targets
command -v make >/dev/null || packages+=(make)
command -v pkg-config >/dev/null || packages+=(pkgconf)
command -v valgrind >/dev/null || packages+=(valgrind)

if [ ${#packages[@]} -gt 0 ]; then
    cmd="apt-get update && apt-get install -y ${packages[*]}"
    if [ "$(id -u)" = 0 ]; then
        echo "ensure-deps: installing ${packages[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        echo "ensure-deps: installing ${packages[*]} with sudo" >&2
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "ensure-deps: missing ${packages[*]}; install them with:" >&2
        echo "    sudo sh -c '$cmd'" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "ensure-deps: no Rust toolchain; install one with:" >&2
    echo "    curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    exit 1
fi

# As root, the test clusters run as postgres (the postgresql-15 package
# creates it), and wal-redo processes as an account of their own, never the
# server's: walredo, a system account with no login shell and no home (the
# library makes the same one on first need; `make install` runs this).
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
