#!/usr/bin/env bash
# The dependency gate: cargo-deny with deny.toml against Cargo.lock, without the network.
#
# Always: licences (the allowed list in deny.toml), bans (two versions of one crate,
# OpenSSL and aws-lc) and sources (crates.io only). Advisories too when advisory-db/ holds
# a RustSec snapshot (scripts/update-advisories.sh takes one where the network reaches the
# database's git repository; CI never fetches it). cargo-deny reads a database only as a
# git checkout under deny.toml's db-path, named after its URL, so the snapshot is laid
# out there as one commit dated like the snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."

checks=(licenses bans sources)
if compgen -G "advisory-db/crates/*/RUSTSEC-*.md" >/dev/null; then
    snapshot=$(sed -n 's/^Snapshot: \([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}\).*/\1/p' advisory-db/README.md)
    if [ -z "$snapshot" ]; then
        echo "advisory-db/README.md names no snapshot date (a line 'Snapshot: YYYY-MM-DD ...')" >&2
        exit 1
    fi
    # The directory cargo-deny derives from db-urls in deny.toml (the default RustSec URL).
    db=target/advisory-dbs/advisory-db-3157b0e258782691
    rm -rf "$db"
    mkdir -p "$db"
    cp -R advisory-db/crates "$db/"
    git -C "$db" init -q
    git -C "$db" add -A
    GIT_AUTHOR_DATE="${snapshot}T00:00:00Z" GIT_COMMITTER_DATE="${snapshot}T00:00:00Z" \
        git -C "$db" -c user.name=sccr -c user.email=sccr@localhost -c commit.gpgsign=false \
        commit -q -m "RustSec advisories of $snapshot (advisory-db/)"
    age_days=$(( ($(date -u +%s) - $(date -u -d "$snapshot" +%s)) / 86400 ))
    echo "cargo deny: advisories from the snapshot of $snapshot ($age_days days old)"
    if [ "$age_days" -gt 90 ]; then
        echo "warning: the advisory snapshot is over 90 days old: run scripts/update-advisories.sh where the network allows" >&2
    fi
    checks+=(advisories)
else
    echo "cargo deny: advisories NOT checked: advisory-db/ holds no RustSec snapshot" \
        "(scripts/update-advisories.sh takes one where the network allows)" >&2
fi
# cargo-deny reads the whole graph, every platform's crates included, which a build never
# downloads: fetch them first (from crates.io; with no network, what is cached is checked).
cargo fetch --locked >/dev/null 2>&1 || echo "warning: cargo fetch failed; checking with the crates cached" >&2
exec cargo deny --offline --locked check "${checks[@]}"
