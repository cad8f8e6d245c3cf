"""Check alert rules against the rule schemas of the API's OpenAPI document.

Usage: python rule_schema_check.py OPENAPI.json CASES.json
CASES.json: {"documents": {"accepted": [...], "refused": [...]},
             "rules": {"accepted": [...], "refused": [...]}}
documents are bodies of PUT /api/v1/alert-rules, rules bodies of PUT
/api/v1/alert-rules/{id}. Every accepted case must match its schema, every refused one
must not. Prints the schemas' own examples as JSON ({"documents": [...], "rules": [...]})
for the caller to send to the server. Exits 1 listing every mismatch.
"""
import json
import sys

import jsonschema_rs

with open(sys.argv[1]) as f:
    doc = json.load(f)
with open(sys.argv[2]) as f:
    cases = json.load(f)


def body_schema(method, path):
    return doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


schemas = {
    "documents": body_schema("put", "/api/v1/alert-rules"),
    "rules": body_schema("put", "/api/v1/alert-rules/{id}"),
}
failures = []
for kind, schema in schemas.items():
    validator = jsonschema_rs.validator_for(schema)
    for case in cases[kind]["accepted"]:
        errors = [e.message for e in validator.iter_errors(case)]
        if errors:
            failures.append(f"{kind}: the schema refuses {json.dumps(case)}: {errors}")
    for case in cases[kind]["refused"]:
        if validator.is_valid(case):
            failures.append(f"{kind}: the schema accepts {json.dumps(case)}")
    for example in schema.get("examples", []):
        if not validator.is_valid(example):
            failures.append(f"{kind}: the schema refuses its own example {json.dumps(example)}")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(json.dumps({kind: schema.get("examples", []) for kind, schema in schemas.items()}))
