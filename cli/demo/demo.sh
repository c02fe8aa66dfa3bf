#!/usr/bin/env bash
# make demo: write real WAL with a throw-away PostgreSQL cluster (14 to 18), let
# PostgreSQL replay it, rebuild every page with walredo and compare; then, in
# SQL, a row before a bad UPDATE through walredo_inspect.
#
#   WORKLOAD=file.sql   the SQL part of the workload (default cli/demo/workload.sql)
#   DEMO_CONF='k=v ...' server settings (data_checksums=on: initdb --data-checksums)
#
# Everything it starts is stopped, and its directory removed, on success,
# failure or Ctrl-C.
set -euo pipefail
# The workspace root: cli/demo/ is two levels below it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# WALREDO_PG_VERSION and WALREDO_PG_BINDIR (make demo PG_VERSION=N sets
# both: scripts/pg-bindir.sh) pick the server.
BIN="${WALREDO_PG_BINDIR:-/usr/lib/postgresql/${WALREDO_PG_VERSION:-15}/bin}"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/walredo-demo.XXXXXX")"
chmod 755 "$DIR"
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$DIR"

cleanup() {
    for d in "$DIR/data" "$DIR/expected" "$DIR/sql/data"; do
        if [ -f "$d/postmaster.pid" ]; then
            as_pg "$BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT TERM

args=("$DIR")
if [ -n "${WORKLOAD:-}" ]; then
    [ -f "$WORKLOAD" ] || { echo "demo: WORKLOAD=$WORKLOAD: no such file" >&2; exit 2; }
    args+=(--workload "$(realpath "$WORKLOAD")")
fi
[ -n "${DEMO_CONF:-}" ] && args+=(--conf "$DEMO_CONF")
"$ROOT/target/release/examples/demo" "${args[@]}"
