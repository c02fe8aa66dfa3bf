#!/usr/bin/env bash
# Run a command inside PostgreSQL VERSION's root (scripts/pg-root.sh makes
# it), from the current directory:
#
#   scripts/in-root.sh 17 make -C pg_walredo PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config
#
# The command runs in a mount namespace of its own, so nothing is left
# mounted afterwards: the root gets /dev, /proc and /sys, and the repository
# at the same path as on the host, so that programs built on the host (the
# test binaries in target/, found by absolute paths) run there unchanged:
# they need an older C library than the root's, which is compatible. /tmp is
# the root's own. Needs root privileges (unshare, mount, chroot).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd -P)"
version="${1:?usage: scripts/in-root.sh VERSION COMMAND...}"
shift
[ $# -gt 0 ] || { echo "in-root: no command" >&2; exit 2; }
root="$("$here/pg-root.sh" --path "$version")"
if [ ! -f "$root/.walredo-root-done" ]; then
    echo "in-root: no PostgreSQL $version root at $root: make it with scripts/pg-root.sh $version" >&2
    exit 3
fi
cwd="$(pwd -P)"
case "$cwd/" in
    "$repo"/*) ;;
    *) echo "in-root: run it from inside the repository ($repo), not $cwd" >&2; exit 2 ;;
esac
# Further directories to show inside, at their own paths (space-separated).
binds="$repo ${WALREDO_ROOT_BINDS:-}"

exec unshare --mount --propagation private -- /bin/bash -euc '
root=$1 cwd=$2 binds=$3; shift 3
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
for d in $binds; do
    mkdir -p "$root$d"
    mount --bind "$d" "$root$d"
done
exec chroot "$root" /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "$@"
' in-root "$root" "$cwd" "$binds" "$@"
