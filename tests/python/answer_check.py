"""Check real answers, live frames and every example against the API's OpenAPI document.

Usage: python answer_check.py OPENAPI.json CASES.json
CASES.json: {"answers": [{"method", "path", "status", "body"}],
             "frames": [server frame, ...], "sent": [client message, ...]}
`path` is the operation's path template (/api/v1/devices/{id}). Checks, with JSON Schema
2020-12 (the dialect of OpenAPI 3.1):
- every example in the document is valid against its schema: each component's
  `examples`, each success answer's, each request body's (schema `examples` and media
  `example`), each live message's;
- every answer is valid against the schema its operation documents for its status;
- every frame is a LiveServerMessage and valid against its type's schema, every sent
  message a LiveClientMessage.
Prints what was covered as JSON ({"operations": [...], "frame_types": [...]}); exits 1
listing every failure.
"""
import json
import sys

import jsonschema_rs

with open(sys.argv[1]) as f:
    doc = json.load(f)
with open(sys.argv[2]) as f:
    cases = json.load(f)

components = doc["components"]
failures = []


def validator(schema):
    # References are to #/components/...: give the schema the document's components.
    root = dict(schema) if isinstance(schema, dict) else {"allOf": [schema]}
    root["components"] = components
    return jsonschema_rs.Draft202012Validator(root)


def check(what, schema, instance):
    errors = [f"{e.instance_path}: {e.message}" for e in validator(schema).iter_errors(instance)]
    if errors:
        failures.append(f"{what}: {json.dumps(instance)[:400]}\n    " + "\n    ".join(errors[:5]))


def component(name):
    return {"$ref": f"#/components/schemas/{name}"}


# Every example against its schema.
examples = 0
for name, schema in components["schemas"].items():
    for ex in schema.get("examples", []):
        check(f"example of component {name}", component(name), ex)
        examples += 1
for path, item in doc["paths"].items():
    for method, op in item.items():
        where = f"{method.upper()} {path}"
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            for ex in body["schema"].get("examples", []):
                check(f"{where}: body schema example", body["schema"], ex)
                examples += 1
            if "example" in body:
                check(f"{where}: body example", body["schema"], body["example"])
                examples += 1
        for status, answer in op["responses"].items():
            media = answer.get("content", {}).get("application/json")
            if status.startswith("2") and media:
                for ex in media["schema"].get("examples", []):
                    check(f"{where} {status}: answer example", media["schema"], ex)
                    examples += 1

# Real answers.
covered = set()
for a in cases["answers"]:
    where = f"{a['method']} {a['path']} {a['status']}"
    op = doc["paths"].get(a["path"], {}).get(a["method"].lower())
    if op is None:
        failures.append(f"{where}: no such operation in the document")
        continue
    answer = op["responses"].get(str(a["status"]))
    if answer is None:
        failures.append(f"{where}: status not documented")
        continue
    media = answer.get("content", {}).get("application/json")
    if media is None:
        failures.append(f"{where}: no JSON schema documented")
        continue
    check(where, media["schema"], a["body"])
    covered.add(f"{a['method']} {a['path']}")

# Live frames.
frame_types = set()
messages = {
    s["properties"]["type"]["const"]: name
    for name, s in components["schemas"].items()
    if name.startswith("Live") and name.endswith("Message") and "properties" in s
}
for frame in cases["frames"]:
    check("server frame", component("LiveServerMessage"), frame)
    name = messages.get(frame.get("type"))
    if name is None:
        failures.append(f"frame of undocumented type {frame.get('type')!r}")
        continue
    check(f"{frame['type']} frame", component(name), frame)
    frame_types.add(frame["type"])
for message in cases["sent"]:
    check("client message", component("LiveClientMessage"), message)

if examples < 40:
    failures.append(f"only {examples} examples found")
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(json.dumps({"operations": sorted(covered), "frame_types": sorted(frame_types), "examples": examples}))
