#!/usr/bin/env python3
"""Cross-checks fhirbundle's validator with an independent FHIR R4 validator (the PyPI package fhirkit-rs).

usage: cross-check-fhirkit.py ARTIFACT_DIR [...]

Every resource of the folders' NDJSON files (which `fhirbundle validate` accepted) is validated by fhirkit; any
error it reports is printed with the file, line and path, and the script exits 1. Prints `N passed, M failed`
(resources). Exits 3 when fhirkit is not installed.
"""
import glob
import os
import sys

try:
    import fhirkit
except ImportError:
    print("fhirkit-rs is not installed (pip install fhirkit-rs==0.1.0)")
    sys.exit(3)


def main():
    passed = failed = 0
    for folder in sys.argv[1:]:
        for path in sorted(glob.glob(os.path.join(folder, "ndjson", "*.ndjson"))):
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    issues = [i for i in fhirkit.validate(line) if i.severity == "error"]
                    if issues:
                        failed += 1
                        if failed <= 20:
                            for issue in issues[:3]:
                                print(f"{os.path.relpath(path, folder)}:{number}: {issue.path}: {issue.message}")
                    else:
                        passed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
