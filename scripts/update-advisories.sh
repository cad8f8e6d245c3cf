#!/usr/bin/env bash
# Refresh the RustSec advisory snapshot in advisory-db/ that scripts/deny.sh checks
# Cargo.lock against offline. Needs the network to reach the database's git repository
# (CI does not, so it only ever reads the snapshot committed here).
#
#   scripts/update-advisories.sh [URL-or-path of an advisory-db git repository]
#
# Keeps the advisories of the crates named in Cargo.lock and fuzz/Cargo.lock (every
# version: cargo-deny matches versions itself), and writes the snapshot's date and
# commit into advisory-db/README.md. A crate added to the lock files later has no
# advisories here until the next refresh: run this after adding dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

url="${1:-${SCCR_ADVISORY_DB_URL:-https://github.com/rustsec/advisory-db}}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A local clone is given as a path; file:// lets --depth apply to it too.
if [ -d "$url" ]; then url="file://$(cd "$url" && pwd)"; fi
git clone --quiet --depth 1 "$url" "$work/db"
commit=$(git -C "$work/db" rev-parse HEAD)
date=$(git -C "$work/db" show -s --format=%cd --date=format:%Y-%m-%d HEAD)

rm -rf advisory-db/crates
mkdir -p advisory-db/crates
crates=0
for lock in Cargo.lock fuzz/Cargo.lock; do
    if [ -f "$lock" ]; then sed -n 's/^name = "\(.*\)"$/\1/p' "$lock"; fi
done | sort -u > "$work/names"
while read -r name; do
    src="$work/db/crates/$name"
    [ -d "$src" ] || continue
    found=0
    for file in "$src"/RUSTSEC-*.md; do
        # The database's template files carry the placeholder id; cargo-deny skips them.
        case "$(basename "$file")" in RUSTSEC-0000-0000.md) continue ;; esac
        [ -f "$file" ] || continue
        mkdir -p "advisory-db/crates/$name"
        cp "$file" "advisory-db/crates/$name/"
        found=1
    done
    crates=$((crates + found))
done < "$work/names"
advisories=$(find advisory-db/crates -name 'RUSTSEC-*.md' | wc -l)
if [ "$advisories" -eq 0 ]; then
    echo "no advisory of a locked crate found in $url: is it the RustSec advisory-db?" >&2
    exit 1
fi

line="Snapshot: $date (advisory-db commit $commit; $advisories advisories of $crates locked crates)"
sed -i "s|^Snapshot: .*|$line|" advisory-db/README.md
grep -q "^Snapshot: $date " advisory-db/README.md || {
    echo "advisory-db/README.md has no 'Snapshot:' line to update" >&2
    exit 1
}
echo "$line"
echo "Now: scripts/deny.sh, then commit advisory-db/."
