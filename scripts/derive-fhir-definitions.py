#!/usr/bin/env python3
"""Derives the FHIR R4 tables fhirbundle needs from the official hl7.fhir.r4.core 4.0.1 package.

usage: derive-fhir-definitions.py [PACKAGE.tgz] [--out-dir DIR]

PACKAGE.tgz defaults to the copy in the repository, schemas/fhir-r4/hl7.fhir.r4.core-4.0.1.tgz (origin and
checksum in schemas/fhir-r4/README.md).

Writes, relative to DIR (default: the repository root):
  schemas/fhir-r4-definitions.json                  condensed tables, for people and other tools
  Sources/FHIRDefinitions/Generated/R4Definitions.swift   the same tables embedded for the Swift runtime

Nothing here is written by hand: element order (FHIR JSON order), types, cardinality, reference targets, required
bindings and primitive regexes all come from the package's StructureDefinitions, ValueSets and CodeSystems. The
output is deterministic, so a test can regenerate it and compare.
"""
import json
import os
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
DEFAULT_PACKAGE = os.path.join(ROOT, "schemas", "fhir-r4", "hl7.fhir.r4.core-4.0.1.tgz")
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SEP = "|"  # between codes; derive() checks no code contains it


def load(package):
    """All JSON resources of the package, by resourceType."""
    out = {"StructureDefinition": [], "ValueSet": [], "CodeSystem": []}
    with tarfile.open(package) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.name.endswith(".json") or not member.name.startswith("package/"):
                continue
            data = json.load(tar.extractfile(member))
            if isinstance(data, dict) and data.get("resourceType") in out:
                out[data["resourceType"]].append(data)
    return out


def type_code(t):
    """The FHIR type of an element type; FHIRPath system types name theirs in an extension."""
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return ext["valueUrl"]
        return code.rsplit(".", 1)[1].lower()
    return code


def concepts_of(codesystem):
    codes = []

    def walk(items):
        for c in items:
            codes.append((codesystem["url"], c["code"]))
            walk(c.get("concept", []))

    walk(codesystem.get("concept", []))
    return codes


def expand(url, valuesets, codesystems, seen=()):
    """The (system, code) pairs of a value set when the package can enumerate them, else None."""
    url = url.split("|")[0]
    vs = valuesets.get(url)
    if vs is None or url in seen:
        return None
    compose = vs.get("compose", {})
    codes = []
    for inc in compose.get("include", []):
        if inc.get("filter"):
            return None
        for ref in inc.get("valueSet", []):
            sub = expand(ref, valuesets, codesystems, seen + (url,))
            if sub is None:
                return None
            codes.extend(sub)
        if "concept" in inc:
            codes.extend((inc.get("system", ""), c["code"]) for c in inc["concept"])
        elif "system" in inc:
            cs = codesystems.get(inc["system"])
            if cs is None or cs.get("content") not in ("complete", None):
                return None
            codes.extend(concepts_of(cs))
    if compose.get("exclude"):
        excluded = set()
        for exc in compose["exclude"]:
            excluded.update((exc.get("system", ""), c["code"]) for c in exc.get("concept", []))
        codes = [c for c in codes if c not in excluded]
    if not codes:
        return None
    assert not any(SEP in x or "\t" in x for pair in codes for x in pair), url
    unique = []
    for c in codes:
        if c not in unique:
            unique.append(c)
    return unique


def derive(package):
    res = load(package)
    valuesets = {vs["url"]: vs for vs in res["ValueSet"]}
    codesystems = {cs["url"]: cs for cs in res["CodeSystem"]}
    sds = [sd for sd in res["StructureDefinition"] if sd.get("derivation") == "specialization" or sd["name"] in ("Element", "BackboneElement", "Resource", "Base")]
    types = []        # (name, kind, [elements])
    primitives = []   # (name, json, regex)
    bindings = {}     # url -> codes or None
    for sd in sorted(sds, key=lambda s: s["name"]):
        kind = sd["kind"]
        name = sd["type"]
        if sd.get("derivation") != "specialization" and name not in ("Element", "BackboneElement", "Resource"):
            continue
        elements = sd["snapshot"]["element"]
        if kind == "primitive-type":
            regex = ""
            json_kind = "string"
            for e in elements:
                if e["path"] == name + ".value":
                    for t in e.get("type", []):
                        for ext in t.get("extension", []):
                            if ext["url"] == REGEX_EXT:
                                regex = ext["valueString"]
                        if t["code"] in ("http://hl7.org/fhirpath/System.Boolean",):
                            json_kind = "boolean"
                        if t["code"] in ("http://hl7.org/fhirpath/System.Integer", "http://hl7.org/fhirpath/System.Decimal"):
                            json_kind = "number"
            # positiveInt and unsignedInt publish System.String as their value type, but they specialise integer
            # and FHIR JSON writes them as numbers (as the official fhir.schema.json does).
            if sd.get("baseDefinition", "").endswith("/integer"):
                json_kind = "number"
            primitives.append((name, json_kind, regex))
            continue
        if kind == "logical":
            continue
        table_kind = {"resource": "resource", "complex-type": "complex"}[kind]
        if sd.get("abstract") and kind == "resource":
            table_kind = "abstract"
        # Group the snapshot into the type itself and its backbone elements, keeping snapshot (= JSON) order.
        children = {}
        backbone_paths = []
        for e in elements:
            path = e["path"]
            if "." not in path:
                continue
            parent, child = path.rsplit(".", 1)
            if ":" in path:
                continue  # slices are profiles' business
            types_ = [type_code(t) for t in e.get("type", [])]
            if "contentReference" in e:
                types_ = [e["contentReference"].lstrip("#")]
            elif types_ in (["BackboneElement"], ["Element"]) and any(x["path"].startswith(path + ".") for x in elements):
                types_ = [path]
                backbone_paths.append(path)
            targets = []
            for t in e.get("type", []):
                for p in t.get("targetProfile", []):
                    targets.append(p.rsplit("/", 1)[1])
            binding = ""
            b = e.get("binding")
            if b and b.get("strength") == "required" and b.get("valueSet"):
                binding = b["valueSet"].split("|")[0]
                if binding not in bindings:
                    bindings[binding] = expand(binding, valuesets, codesystems)
            children.setdefault(parent, []).append({
                "name": child, "min": e.get("min", 0), "max": e.get("max", "*"), "types": types_,
                "targets": sorted(set(targets)), "binding": binding,
            })
        types.append((name, table_kind, children.get(name, [])))
        for path in backbone_paths:
            types.append((path, "backbone", children.get(path, [])))
    return types, primitives, bindings


def write_json(path, types, primitives, bindings):
    doc = {
        "description": "FHIR R4 (4.0.1) element tables condensed by scripts/derive-fhir-definitions.py from the official "
                       "hl7.fhir.r4.core package. Elements are in FHIR JSON order. Do not edit.",
        "primitives": [{"name": n, "json": j, "regex": r} for n, j, r in primitives],
        "types": [{"name": n, "kind": k, "elements": els} for n, k, els in types],
        "requiredBindings": [{"valueSet": url, "codes": None if codes is None else [c for _, c in codes],
                              "systems": None if codes is None else [s for s, _ in codes]}
                             for url, codes in sorted(bindings.items())],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def write_swift(path, types, primitives, bindings):
    """One line per fact, tab-separated, in a raw string literal: compiles in moments, parses in milliseconds."""
    binding_index = {url: i for i, url in enumerate(sorted(bindings))}
    lines = []
    for n, j, r in primitives:
        lines.append("\t".join(["P", n, j, r]))
    for url in sorted(bindings):
        codes = bindings[url]
        if codes is None:
            lines.append("\t".join(["V", url, "*", ""]))
        else:
            runs = []  # the codes' systems, as runs of one system: N*system
            for system, _ in codes:
                if runs and runs[-1][1] == system:
                    runs[-1][0] += 1
                else:
                    runs.append([1, system])
            lines.append("\t".join(["V", url, SEP.join(c for _, c in codes), SEP.join(f"{n}*{system}" for n, system in runs)]))
    for n, k, els in types:
        lines.append("\t".join(["T", n, k]))
        for e in els:
            lines.append("\t".join([
                "E", e["name"], str(e["min"]), e["max"], ",".join(e["types"]), ",".join(e["targets"]),
                str(binding_index[e["binding"]]) if e["binding"] else "",
            ]))
    body = "\n".join(lines)
    assert '"""#' not in body
    with open(path, "w", encoding="utf-8") as f:
        f.write("// Generated by scripts/derive-fhir-definitions.py from hl7.fhir.r4.core 4.0.1. Do not edit.\n")
        f.write("// Lines: P name json regex; V valueSet codes ('|'-separated, * = not enumerable) systems (runs N*system, in code order);\n")
        f.write("//        T type kind; E name min max types targets bindingIndex (tab-separated fields)\n\n")
        f.write("extension FHIRDefinitions {\n    static let r4Table = #\"\"\"\n")
        f.write(body)
        f.write("\n\"\"\"#\n}\n")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_dir = ROOT
    if "--out-dir" in sys.argv:
        out_dir = sys.argv[sys.argv.index("--out-dir") + 1]
        args = [a for a in args if a != out_dir]
    package = args[0] if args else DEFAULT_PACKAGE
    if not os.path.isfile(package):
        sys.exit(f"error: {package}: no such file; pass the official hl7.fhir.r4.core 4.0.1 package (.tgz)")
    types, primitives, bindings = derive(package)
    os.makedirs(os.path.join(out_dir, "schemas"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "Sources", "FHIRDefinitions", "Generated"), exist_ok=True)
    write_json(os.path.join(out_dir, "schemas", "fhir-r4-definitions.json"), types, primitives, bindings)
    write_swift(os.path.join(out_dir, "Sources", "FHIRDefinitions", "Generated", "R4Definitions.swift"), types, primitives, bindings)
    print(f"{len(types)} types, {len(primitives)} primitives, {len(bindings)} required value sets "
          f"({sum(1 for c in bindings.values() if c)} enumerable)")


if __name__ == "__main__":
    main()
