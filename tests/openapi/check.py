"""Checks docs/openapi.yaml against what the agent does (tests/openapi.rs runs it).

Usage: check.py SPEC_YAML SERVED_JSON EXAMPLES_JSON

1. The document is a valid OpenAPI 3.1 document (openapi-spec-validator).
2. What the agent serves at /api/v0/openapi.json is the same document.
3. Every example value (serialised by the Rust wire types, or answered by a real router) is
   accepted by its component schema, with every object schema made strict
   (additionalProperties: false unless it says otherwise): a field the code sends or accepts
   that the document does not describe fails here.

Prints one line per problem and exits 1 if there is any.
"""

import copy
import json
import sys

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

spec_path, served_path, examples_path = sys.argv[1:4]
with open(spec_path) as f:
    spec = yaml.safe_load(f)
with open(served_path) as f:
    served = json.load(f)
with open(examples_path) as f:
    examples = json.load(f)

problems = []
try:
    validate(spec)
except Exception as e:  # the validator's own exception types vary between versions
    problems.append(f"{spec_path} is not a valid OpenAPI document: {e}")

if served != spec:
    problems.append("GET /api/v0/openapi.json differs from docs/openapi.yaml (rebuild?)")


def strict(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)


strict_spec = copy.deepcopy(spec)
strict(strict_spec["components"]["schemas"])
URI = "urn:wgagent:openapi"
registry = Registry().with_resource(URI, Resource(contents=strict_spec, specification=DRAFT202012))
schemas = spec["components"]["schemas"]
checked = 0
for name, values in examples.items():
    if name not in schemas:
        problems.append(f"no schema {name} in components.schemas")
        continue
    validator = Draft202012Validator(
        {"$ref": f"{URI}#/components/schemas/{name}"}, registry=registry
    )
    for i, value in enumerate(values):
        checked += 1
        for error in validator.iter_errors(value):
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            problems.append(f"{name} example {i} at {where}: {error.message}")

for p in problems:
    print(p, file=sys.stderr)
print(f"openapi: document valid, {checked} examples of {len(examples)} schemas checked")
sys.exit(1 if problems else 0)
