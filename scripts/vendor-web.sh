#!/usr/bin/env bash
# Refresh web/vendor/ from the versions pinned in web/package.json: npm install into a
# scratch folder, then copy the files the dashboard loads and their licences. The copies
# are committed, so building the binary needs neither npm nor the network.
set -euo pipefail
cd "$(dirname "$0")/../web"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp package.json "$scratch/"
[ -f package-lock.json ] && cp package-lock.json "$scratch/"
(cd "$scratch" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error)
cp "$scratch/package-lock.json" package-lock.json
rm -rf vendor
mkdir -p vendor/leaflet/images vendor/uplot
nm="$scratch/node_modules"
cp "$nm/leaflet/dist/leaflet.js" "$nm/leaflet/dist/leaflet.css" vendor/leaflet/
cp "$nm/leaflet/dist/images/"*.png vendor/leaflet/images/
cp "$nm/leaflet/LICENSE" vendor/leaflet/LICENSE
cp "$nm/uplot/dist/uPlot.iife.min.js" "$nm/uplot/dist/uPlot.min.css" vendor/uplot/
cp "$nm/uplot/LICENSE" vendor/uplot/LICENSE
for p in leaflet uplot; do
    node -e "const p=require('$nm/$p/package.json');console.log(p.name+' '+p.version+' '+p.license)"
done > vendor/VERSIONS
cat vendor/VERSIONS
