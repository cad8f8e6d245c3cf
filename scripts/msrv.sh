#!/usr/bin/env bash
# The declared minimum Rust version (`rust-version` in Cargo.toml) is true of the lockfile:
# no locked dependency declares a newer one. Clippy's `incompatible_msrv` lint (on by
# default, denied by `.ci/run`) checks the workspace's own code against the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --locked --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
def version(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"every workspace crate must inherit one rust-version, found {sorted(map(str, ours))}")
msrv = ours.pop()
newer = sorted((p["name"], p["version"], p["rust_version"]) for p in meta["packages"]
               if p["id"] not in members and p.get("rust_version")
               and version(p["rust_version"]) > version(msrv))
if newer:
    for name, v, rv in newer:
        print(f"{name} {v} needs Rust {rv}", file=sys.stderr)
    sys.exit(f"rust-version = {msrv} in Cargo.toml is older than {len(newer)} locked dependencies need")
print(f"rust-version {msrv}: every locked dependency builds with it")
'
