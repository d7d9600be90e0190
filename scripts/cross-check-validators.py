#!/usr/bin/env python3
"""Cross-checks `fhirbundle validate` with two independent FHIR R4 validators: fhirkit-rs (PyPI) and the official
R4 JSON Schema (schemas/fhir-r4/fhir.schema.json, with the PyPI package jsonschema).

usage: cross-check-validators.py --fhirbundle BIN [--package TGZ] [--every N] [--seed S] [FOLDER ...]

The resources of the FOLDERs (NDJSON lines, bundle entries, single-resource files) and every Nth resource of the
official hl7.fhir.r4.core package are collected, and each is copied once with one seeded defect (an unknown
element, a JSON type, a format, an impossible date, a bad id, an empty or null value, an array for a single value,
a missing required element, a second type of a choice, a code outside a required value set, an extension without
url, a key given twice). All of them go, one per line, into one NDJSON file that the three validators check.

Structure findings only: references between the collected resources do not resolve in isolation, so reference and
identifier rules are left out. The script fails (exit 1) when
  - fhirkit or the JSON Schema flags a resource that fhirbundle does not (a blind spot); errors that are the
    schema's own mistakes are left out by `schema_is_wrong`, which says why, citing the specification;
  - fhirbundle alone flags an original resource (a false alarm), unless KNOWN_INVALID says why the resource breaks
    the specification.
It prints what each validator caught of the seeded defects. Exits 3 when fhirkit or jsonschema is not installed.
"""
import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile

try:
    import fhirkit
    import jsonschema
except ImportError as error:
    print(f"{error.name} is not installed (scripts/install-test-tools.sh installs fhirkit-rs and jsonschema)")
    sys.exit(3)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRUCTURE_RULES = {
    "json-syntax", "duplicate-key", "ndjson-line", "unknown-resource-type", "unknown-element", "cardinality",
    "primitive-json-type", "primitive-format", "required-binding", "empty-value", "reference-target-type",
}

# Resources of the official package that break the specification: fhirbundle flags them, and is right to.
KNOWN_INVALID = {
    # Resource.id is an `id`: "Any combination of upper- or lower-case ASCII letters, numerals, '-' and '.', with a
    # length limit of 64 characters" (https://hl7.org/fhir/R4/datatypes.html#id). This id has 67.
    "SearchParameter/DocumentReference-relationship-CodeableConcept-relatesTo-relation": "Resource.id longer than 64 characters",
}



def schema_is_wrong(error):
    """Why a JSON Schema error is the schema's mistake, or None."""
    prefix = "Additional properties are not allowed ('_"
    if prefix in error.message and isinstance(error.schema, dict):
        name = error.message.split(prefix, 1)[1].split("'", 1)[0]
        if name in error.schema.get("properties", {}):
            # Every primitive element may carry an id and extensions in `_name` (https://hl7.org/fhir/R4/json.html#primitive);
            # the published schema leaves `_name` out for canonical-typed elements (StructureDefinition.baseDefinition,
            # ElementDefinition.type.profile).
            return f"_{name} is the extension form of the primitive {name} (json.html#primitive)"
    if error.validator == "pattern" and error.validator_value == "^[ \\r\\n\\t\\S]+$" and isinstance(error.instance, str) \
            and error.instance.strip(" \r\n\t") and not any(ord(c) < 0x20 and c not in "\r\n\t" for c in error.instance):
        # FHIR's string regex is XML Schema's, where \S is everything but space, tab, CR and LF
        # (https://www.w3.org/TR/xmlschema-2/#charcter-classes); read as ECMAScript or Python, \S also excludes
        # U+00A0 and other Unicode spaces, so the schema refuses legal strings such as 'expiry date.\xa0It'.
        return "a Unicode space in a string (XML Schema's \\S allows it)"
    return None


def collect(folder):
    """(origin, resource) of every resource in a folder: NDJSON lines, bundle entries (nested too), single files."""
    out = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "upload")
        for name in sorted(files):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, folder)
            if name.endswith(".ndjson") and name != "rejects.ndjson":
                with open(path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        if line.strip():
                            out.append((f"{rel}:{n}", json.loads(line)))
            elif name.endswith(".json") and name != "manifest.json":
                with open(path, encoding="utf-8") as f:
                    value = json.load(f)
                out.extend(resources_in(value, rel))
    return out


def resources_in(value, origin):
    if not isinstance(value, dict) or "resourceType" not in value:
        return []
    if value["resourceType"] == "Bundle" and value.get("type") in ("batch", "transaction", "collection", "searchset"):
        found = []
        for i, entry in enumerate(value.get("entry", [])):
            found.extend(resources_in(entry.get("resource"), f"{origin}#/entry/{i}/resource"))
        return found
    return [(origin, value)]


def package_sample(tgz, every):
    out = []
    with tarfile.open(tgz) as archive:
        members = sorted((m for m in archive.getmembers() if m.name.endswith(".json") and m.isfile()), key=lambda m: m.name)
        members = [m for m in members if not os.path.basename(m.name).startswith(".") and os.path.basename(m.name) != "package.json"]
        for i, member in enumerate(members):
            if i % every:
                continue
            value = json.load(archive.extractfile(member))
            if isinstance(value, dict) and "resourceType" in value:
                out.append((f"{os.path.basename(tgz)}:{member.name}", value))
    return out


def primitive_paths(value, path=()):
    """(path, value) of every primitive leaf (not resourceType), depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "resourceType":
                yield from primitive_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from primitive_paths(v, path + (i,))
    else:
        yield path, value


def set_at(value, path, new):
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new


DATE_KEYS = ("date", "Date", "DateTime", "birthDate", "issued", "start", "end", "authoredOn", "recorded", "onsetDateTime")


def mutants(resource, rng):
    """(label, text) of defective copies of a resource; text is the NDJSON line."""
    out = []

    def add(label, value):
        out.append((label, json.dumps(value, separators=(",", ":"), ensure_ascii=False)))

    r = copy.deepcopy(resource)
    r["fooBar"] = 1
    add("unknown-element", r)
    leaves = [(p, v) for p, v in primitive_paths(resource) if not any(isinstance(s, str) and s.startswith("_") for s in p)]
    strings = [(p, v) for p, v in leaves if isinstance(v, str) and isinstance(p[-1], str) and p[-1] not in ("div",)]
    booleans = [(p, v) for p, v in leaves if isinstance(v, bool)]
    if strings:
        p, _ = rng.choice(strings)
        r = copy.deepcopy(resource)
        set_at(r, p, "")
        add(f"empty-string at {'/'.join(map(str, p))}", r)
        r = copy.deepcopy(resource)
        set_at(r, p, None)
        add(f"null at {'/'.join(map(str, p))}", r)
        r = copy.deepcopy(resource)
        set_at(r, p, 12)
        add(f"number for a string at {'/'.join(map(str, p))}", r)
    if booleans:
        p, v = rng.choice(booleans)
        r = copy.deepcopy(resource)
        set_at(r, p, "true" if v else "false")
        add(f"string for a boolean at {'/'.join(map(str, p))}", r)
    dates = [(p, v) for p, v in strings if isinstance(p[-1], str) and p[-1].endswith(DATE_KEYS) and len(v) >= 10 and v[4] == "-"]
    if dates:
        p, v = rng.choice(dates)
        r = copy.deepcopy(resource)
        set_at(r, p, v[:4] + "-02-30" + v[10:])
        add(f"impossible date at {'/'.join(map(str, p))}", r)
        r = copy.deepcopy(resource)
        set_at(r, p, v[:4] + "/01/02" + v[10:])
        add(f"malformed date at {'/'.join(map(str, p))}", r)
    r = copy.deepcopy(resource)
    r["id"] = "x" * 65
    add("id longer than 64", r)
    r = copy.deepcopy(resource)
    r["id"] = "has space"
    add("id with a space", r)
    if isinstance(resource.get("status"), str):
        r = copy.deepcopy(resource)
        r["status"] = [resource["status"]]
        add("array for a single status", r)
        r = copy.deepcopy(resource)
        r["status"] = "not-a-status-code"
        add("status outside its required value set", r)
        r = copy.deepcopy(resource)
        del r["status"]
        add("status removed", r)
    if resource["resourceType"] == "Patient":
        r = copy.deepcopy(resource)
        r["gender"] = "M"
        add("gender outside its required value set", r)
    value_keys = [k for k in resource if k.startswith("value") and k[5:6].isupper()]
    if value_keys:
        r = copy.deepcopy(resource)
        r["valueBoolean" if value_keys[0] != "valueBoolean" else "valueString"] = True if value_keys[0] != "valueBoolean" else "x"
        add("a second type of value[x]", r)
    if resource["resourceType"] in ("Condition", "AllergyIntolerance") and "clinicalStatus" in resource:
        r = copy.deepcopy(resource)
        r["clinicalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "cured"}]}
        add("clinicalStatus outside its required value set", r)
    r = copy.deepcopy(resource)
    r["_id"] = {"extension": [{"valueString": "no url"}]}
    add("extension without url in _id", r)
    text = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
    out.append(("a key given twice", '{"resourceType":"' + resource["resourceType"] + '",' + text[1:]))
    return out


def schema_validator(schema):
    cache = {}

    def validate(resource):
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if kind not in schema["definitions"]:
            return ["unknown resourceType"]
        if kind not in cache:
            cache[kind] = jsonschema.Draft6Validator({"$ref": f"#/definitions/{kind}", "definitions": schema["definitions"]})
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:160]}" for e in cache[kind].iter_errors(resource) if not schema_is_wrong(e)]

    return validate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fhirbundle", required=True)
    parser.add_argument("--package", default=os.path.join(ROOT, "schemas", "fhir-r4", "hl7.fhir.r4.core-4.0.1.tgz"))
    parser.add_argument("--schema", default=os.path.join(ROOT, "schemas", "fhir-r4", "fhir.schema.json"))
    parser.add_argument("--every", type=int, default=15, help="take every Nth resource of the package (default 15)")
    parser.add_argument("--mutate-every", type=int, default=4, help="seed defects into every Nth resource (default 4)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("folders", nargs="*")
    args = parser.parse_args()

    originals = []
    for folder in args.folders:
        originals.extend(collect(folder))
    originals.extend(package_sample(args.package, args.every))
    rng = random.Random(args.seed)
    cases = []  # (origin, label or None, line)
    for i, (origin, resource) in enumerate(originals):
        cases.append((origin, None, json.dumps(resource, separators=(",", ":"), ensure_ascii=False)))
        if i % args.mutate_every == 0:
            for label, line in mutants(resource, rng):
                cases.append((origin, label, line))

    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "cases.ndjson"), "w", encoding="utf-8") as f:
            for _, _, line in cases:
                f.write(line + "\n")
        run = subprocess.run([args.fhirbundle, "validate", work, "--format", "json", "--severity", "error"], capture_output=True, text=True)
        if run.returncode not in (0, 1):
            print(run.stdout, run.stderr)
            sys.exit(2)
        ours = {}
        for finding in json.loads(run.stdout)["findings"]:
            if finding["rule"] in STRUCTURE_RULES and finding.get("line"):
                ours.setdefault(finding["line"], []).append(f"{finding['rule']} {finding.get('pointer', '')}: {finding['message']}")

    schema = schema_validator(json.load(open(args.schema, encoding="utf-8")))
    missed, alarms, unflagged = [], [], []
    caught = {"fhirbundle": 0, "fhirkit": 0, "JSON Schema": 0}
    total_seeded = 0
    for number, (origin, label, line) in enumerate(cases, 1):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        kit = [f"{i.path}: {i.message}" for i in fhirkit.validate(line) if i.severity == "error"]
        sch = schema(value) if value is not None else []
        if label and label.startswith("a key given twice"):
            sch = []  # Python's json keeps the last key: the schema never sees the duplicate
        mine = ours.get(number, [])
        if label:
            total_seeded += 1
            caught["fhirbundle"] += bool(mine)
            caught["fhirkit"] += bool(kit)
            caught["JSON Schema"] += bool(sch)
        if (kit or sch) and not mine:
            missed.append(f"{origin} [{label or 'original'}]: fhirkit {kit[:2]} schema {sch[:2]}")
        if label and not (kit or sch or mine):
            unflagged.append(f"{origin} [{label}]")
        if not label and mine and not (kit or sch):
            key = f"{value.get('resourceType')}/{value.get('id')}" if isinstance(value, dict) else origin
            if key not in KNOWN_INVALID:
                alarms.append(f"{origin} ({key}): {mine[:3]} (fhirkit {kit[:2]}, schema {sch[:2]})")

    print(f"{len(originals)} resources ({len(args.folders)} folders, every {args.every}th of the package), {total_seeded} seeded defects")
    for tool, n in caught.items():
        print(f"  {tool}: caught {n} of {total_seeded} seeded defects ({100 * n // max(total_seeded, 1)}%)")
    for m in missed[:40]:
        print("missed: " + m)
    for a in alarms[:40]:
        print("false alarm: " + a)
    for u in unflagged[:10]:
        print("no validator flags (perhaps no defect): " + u)
    print(f"{len(missed)} missed, {len(alarms)} false alarms")
    sys.exit(1 if missed or alarms else 0)


if __name__ == "__main__":
    main()
