#!/usr/bin/env bash
# Installs the programs that some tests need and that this repository does not build, into .venv-ci/ at the
# repository root, where the tests look for them (SEKMET_BIN and FHIRKIT_PYTHON override):
#   fhirkit-rs   an independent FHIR R4 validator (IndependentValidatorTests)
#   sekmet-fhir  an independent FHIR R4 server, started by the tests on 127.0.0.1 only (SekmetUploadTests)
#   PyYAML, jsonschema  for scripts/check-schemas.py
# Needs Python 3 with venv (Debian: apt-get install python3-venv) and access to PyPI. Safe to run again: it does
# nothing when everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-ci

installed() {
    [ -x "$venv/bin/python" ] && [ -x "$venv/bin/sekmet" ] &&
        "$venv/bin/python" -c "import fhirkit, yaml, jsonschema" 2>/dev/null
}

if installed; then
    echo "test tools: already installed in $venv/"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    fhirkit-rs==0.1.0 sekmet-fhir==0.1.1 PyYAML jsonschema
installed || { echo "error: $venv/ is incomplete after installing; see pip's output above" >&2; exit 1; }
echo "test tools: installed in $venv/ (fhirkit-rs 0.1.0, sekmet-fhir 0.1.1, PyYAML, jsonschema)"
