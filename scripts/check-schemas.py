#!/usr/bin/env python3
"""Checks the JSON Schemas in schemas/ against real files.

usage: check-schemas.py [manifest.json ...]

Validates every fixtures/**/mapping*.yaml against schemas/mapping.schema.json, each manifest given against
schemas/manifest.schema.json, and that deliberately broken mappings are refused. Prints `N passed, M failed`.
"""
import glob
import json
import os
import sys

import jsonschema
import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def load_schema(name):
    with open(os.path.join(ROOT, "schemas", name)) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def main():
    mapping = load_schema("mapping.schema.json")
    manifest = load_schema("manifest.schema.json")
    passed = failed = 0

    def check(label, ok, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {label}: {detail}")

    for path in sorted(glob.glob(os.path.join(ROOT, "fixtures", "**", "mapping*.yaml"), recursive=True)):
        with open(path) as f:
            doc = yaml.safe_load(f)
        errors = list(mapping.iter_errors(doc))
        check(os.path.relpath(path, ROOT), not errors, "; ".join(e.message for e in errors[:3]))
        # Mistakes the schema must catch, made on a copy of a real mapping.
        broken = dict(doc, sorces=doc.get("sources"))
        check(f"{os.path.relpath(path, ROOT)} with a misspelt key", bool(list(mapping.iter_errors(broken))), "accepted")
        bad_step = json.loads(json.dumps(doc))
        bad_step["steps"][0]["bundle"] = "bunch"
        check(f"{os.path.relpath(path, ROOT)} with a bad bundle kind", bool(list(mapping.iter_errors(bad_step))), "accepted")

    for path in sys.argv[1:]:
        with open(path) as f:
            doc = json.load(f)
        errors = list(manifest.iter_errors(doc))
        check(path, not errors, "; ".join(e.message for e in errors[:3]))

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
