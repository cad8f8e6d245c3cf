"""Check NGSI-LD entities against the Smart Data Models' published property database.

Usage: python ngsi_check.py ENTITIES.json
ENTITIES.json holds a list of normalized NGSI-LD entities. The model database is the one
the `pysmartdatamodels` package (PyPI, by the Smart Data Models programme) ships in
model-assets/smartdatamodels.json.gz: one record per (data model, property) with its JSON
type and its NGSI-LD kind (Property, Relationship, GeoProperty). For every attribute of
every entity: the property must exist in the entity type's model, its kind must match,
its value must have the model's JSON type and, where the model lists the values a text
property takes (its `enum`, or "Enum: …" in its description), be one of them. Exits 1
listing every mismatch.
"""
import ast
import gzip
import importlib.util
import json
import os
import re
import sys

spec = importlib.util.find_spec("pysmartdatamodels")
if spec is None or not spec.submodule_search_locations:
    sys.exit("pysmartdatamodels is not installed")
package_dir = list(spec.submodule_search_locations)[0]
with gzip.open(os.path.join(package_dir, "model-assets", "smartdatamodels.json.gz")) as f:
    records = json.load(f)

models = {}
# The values a text property may take, where the model lists them: its `enum` (a list,
# or a Python list literal), else the list after "Enum:" in its description ('a, b', ‘a, b’, [a, b]).
enums = {}
for r in records:
    models.setdefault(r["dataModel"], {})[r["property"]] = (r.get("type"), r.get("typeNGSI"))
    if r.get("type") != "string":
        continue
    values = []
    listed = r.get("enum")
    if isinstance(listed, str):
        try:
            listed = ast.literal_eval(listed)
        except (ValueError, SyntaxError):
            listed = None
    if isinstance(listed, list):
        values = [str(v) for v in listed]
    if not values:
        m = re.search(r"Enum:[\s'‘\[]*([^'’\]]+)", r.get("description") or "")
        if m:
            values = [v.strip() for v in m.group(1).split(",") if v.strip()]
    if values:
        enums.setdefault((r["dataModel"], r["property"]), set()).update(values)

JSON_TYPES = {
    "string": lambda v: isinstance(v, str) or (isinstance(v, dict) and v.get("@type") in ("DateTime", "Date")),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}

entities = json.load(open(sys.argv[1]))
problems = []
checked = 0
enumerated = 0
for e in entities:
    kind = e.get("type")
    model = models.get(kind)
    if model is None:
        problems.append(f"{kind}: no such data model")
        continue
    if not str(e.get("id", "")).startswith(f"urn:ngsi-ld:{kind}:"):
        problems.append(f"{kind}: id {e.get('id')!r} is not urn:ngsi-ld:{kind}:…")
    for name, attr in e.items():
        if name in ("id", "type", "@context"):
            continue
        checked += 1
        where = f"{kind}.{name}"
        if name not in model:
            problems.append(f"{where}: not a property of the model")
            continue
        json_type, ngsi = model[name]
        if not isinstance(attr, dict) or "type" not in attr:
            problems.append(f"{where}: not a normalized attribute")
            continue
        if ngsi and attr["type"] != ngsi:
            problems.append(f"{where}: is a {attr['type']}, the model says {ngsi}")
        if attr["type"] == "Relationship":
            if not str(attr.get("object", "")).startswith("urn:ngsi-ld:"):
                problems.append(f"{where}: relationship object {attr.get('object')!r} is not a URN")
            continue
        value = attr.get("value")
        if attr["type"] == "GeoProperty":
            if not (isinstance(value, dict) and value.get("type") in ("Point", "LineString", "Polygon", "MultiPoint") and "coordinates" in value):
                problems.append(f"{where}: not a GeoJSON geometry")
            continue
        check = JSON_TYPES.get(json_type)
        if check is not None and not check(value):
            problems.append(f"{where}: value {value!r} is not a {json_type}")
            continue
        allowed = enums.get((kind, name))
        if allowed and isinstance(value, str) and value not in allowed:
            problems.append(f"{where}: {value!r} is not one of the model's values ({', '.join(sorted(allowed))})")
        if allowed:
            enumerated += 1

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{len(entities)} entities, {checked} attributes match the Smart Data Models database ({enumerated} of them against the model's list of values)")
