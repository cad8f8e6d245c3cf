#!/usr/bin/env bash
# Refresh web/vendor/ from the versions pinned in web/package.json: npm install into a
# scratch folder, then copy the files the dashboard loads and their licences. The copies
# are committed, so building the binary needs neither npm nor the network.
# pmtiles' npm package ships no licence file: its BSD-3-Clause text (from the project's
# repository) is kept in scripts/vendor-licenses/; its browser build bundles fflate (MIT),
# whose licence comes from fflate's own package.
set -euo pipefail
licenses="$(cd "$(dirname "$0")" && pwd)/vendor-licenses"
cd "$(dirname "$0")/../web"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp package.json "$scratch/"
[ -f package-lock.json ] && cp package-lock.json "$scratch/"
(cd "$scratch" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error)
cp "$scratch/package-lock.json" package-lock.json
rm -rf vendor
mkdir -p vendor/leaflet/images vendor/uplot vendor/pmtiles
nm="$scratch/node_modules"
cp "$nm/leaflet/dist/leaflet.js" "$nm/leaflet/dist/leaflet.css" vendor/leaflet/
cp "$nm/leaflet/dist/images/"*.png vendor/leaflet/images/
cp "$nm/leaflet/LICENSE" vendor/leaflet/LICENSE
cp "$nm/uplot/dist/uPlot.iife.min.js" "$nm/uplot/dist/uPlot.min.css" vendor/uplot/
cp "$nm/uplot/LICENSE" vendor/uplot/LICENSE
# The browser build (an IIFE defining the global `pmtiles`, with pmtiles.leafletRasterLayer).
cp "$nm/pmtiles/dist/pmtiles.js" vendor/pmtiles/
cp "$licenses/pmtiles-LICENSE" vendor/pmtiles/LICENSE
cp "$nm/fflate/LICENSE" vendor/pmtiles/fflate-LICENSE
{
    for p in leaflet uplot pmtiles; do
        node -e "const p=require('$nm/$p/package.json');console.log(p.name+' '+p.version+' '+p.license)"
    done
    node -e "const p=require('$nm/fflate/package.json');console.log(p.name+' '+p.version+' '+p.license+' (licence of the fflate code bundled in pmtiles/pmtiles.js)')"
} > vendor/VERSIONS
cat vendor/VERSIONS
