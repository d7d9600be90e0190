#!/usr/bin/env python3
"""The naive baseline of issue 12: the seed export to NDJSON with csv and json.dumps, nothing else (no mapping file,
no bundles, no checks, no lookups, no manifest). usage: naive-convert.py EXPORT_DIR OUT_DIR"""
import csv, json, os, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
S = "http://your-source-system.com/"
def ref(kind, v): return {"reference": f"Patient?identifier={S}patientId|{v}"} if kind == "p" else {"reference": f"Encounter?identifier={S}encounterId|{v}"}
tables = [
    ("patients.csv", "Patient", lambda r: {"resourceType": "Patient", "identifier": [{"system": S + "patientId", "value": r["patient_id"]}],
        "name": [{"given": [r["first_name"]], "family": r["last_name"]}], "birthDate": r["birth_date"], "gender": {"M": "male", "F": "female"}.get(r["gender"], "unknown")}),
    ("patient_conditions.csv", "Condition", lambda r: {"resourceType": "Condition", "identifier": [{"system": S + "patientConditionId", "value": r["patient_condition_id"]}],
        "subject": ref("p", r["patient_id"]), "code": {"coding": [{"system": S + "conditionId", "code": r["condition_id"]}]}, "onsetDateTime": r["onset_date"]}),
    ("encounters.csv", "Encounter", lambda r: {"resourceType": "Encounter", "identifier": [{"system": S + "encounterId", "value": r["encounter_id"]}], "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": ref("p", r["patient_id"]), "period": {"start": r["date"]}}),
    ("notes.csv", "ClinicalImpression", lambda r: {"resourceType": "ClinicalImpression", "identifier": [{"system": S + "noteId", "value": r["note_id"]}],
        "status": "completed", "encounter": ref("e", r["encounter_id"]), "summary": r["summary"]}),
]
for file, type_, make in tables:
    with open(os.path.join(src, file), newline="", encoding="utf-8") as f, open(os.path.join(out, type_ + ".ndjson"), "w", encoding="utf-8") as o:
        for row in csv.DictReader(f):
            o.write(json.dumps(make(row), separators=(",", ":")) + "\n")
