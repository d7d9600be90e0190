#!/usr/bin/env python3
"""Generates a synthetic clinic export in the shape of Medplum's migration example, for benchmarks.

usage: generate-seed-export.py ROWS OUTDIR [--xml]

Writes patients.csv, conditions.csv (a small code table), patient_conditions.csv, encounters.csv and notes.csv with
ROWS rows each (conditions: 50), plus mapping.yaml (a copy of the example mapping). With --xml it writes
one XML file per table instead (element per record, the example's export.xml layout) and mapping-xml.yaml.
Output is deterministic.
"""
import os
import random
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "fixtures", "medplum-example")
FIRST = ["John", "Jane", "Ann", "Omar", "Li", "Maria", "Kofi", "Ana", "Sven", "Priya", "José", "Zoë"]
LAST = ["Doe", "Smith", "Lee", "Haddad", "Chen", "García", "Mensah", "Silva", "Berg", "Patel", "O'Brien", "Müller"]
CONDITIONS = [(f"C{i:03d}", f"Condition {i}", code) for i, code in enumerate(["I10", "E11"] * 25)]
NOTE = "Patient seen for follow-up, vitals stable; plan reviewed, \"no change\" to medication."


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = int(sys.argv[1])
    out = sys.argv[2]
    xml = "--xml" in sys.argv
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(42)
    patients = [(f"P{i:07d}", rnd.choice(FIRST), rnd.choice(LAST),
                 f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}", rnd.choice("MF"))
                for i in range(rows)]
    pcs = [(f"PC{i:07d}", f"P{rnd.randrange(rows):07d}", CONDITIONS[rnd.randrange(len(CONDITIONS))][0],
            f"{rnd.randint(2000, 2023)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}") for i in range(rows)]
    encs = [(f"E{i:07d}", f"P{rnd.randrange(rows):07d}", f"2023-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
             rnd.choice(["checkup", "emergency"])) for i in range(rows)]
    notes = [(f"N{i:07d}", f"E{i:07d}", NOTE) for i in range(rows)]
    if xml:
        write_xml(out, patients, pcs, encs, notes)
        shutil.copy(os.path.join(EXAMPLE, "mapping-xml.yaml"), os.path.join(out, "mapping-xml.yaml"))
        with open(os.path.join(out, "mapping-xml.yaml")) as f:
            text = f.read()
        # One file per table here (the example keeps them in one export.xml and reads notes from a MySQL dump).
        for table in ("patients", "conditions", "patientConditions", "encounters"):
            text = text.replace("file: export.xml\n    record: /clinic/" + table + "/", "file: " + table + ".xml\n    record: /clinic/" + table + "/")
        text = text.replace("""  notes:
    file: notes-mysql.xml
    format: mysql-xml""", """  notes:
    file: notes.xml
    record: /clinic/notes/note
    fields: { note_id: "@id", encounter_id: "@encounter", summary: summary }""")
        with open(os.path.join(out, "mapping-xml.yaml"), "w") as f:
            f.write(text)
    else:
        write_csv(os.path.join(out, "patients.csv"), "patient_id,first_name,last_name,birth_date,gender", patients)
        write_csv(os.path.join(out, "conditions.csv"), "condition_id,condition_name,icd10_code", CONDITIONS)
        write_csv(os.path.join(out, "patient_conditions.csv"), "patient_condition_id,patient_id,condition_id,onset_date", pcs)
        write_csv(os.path.join(out, "encounters.csv"), "encounter_id,patient_id,date,type", encs)
        write_csv(os.path.join(out, "notes.csv"), "note_id,encounter_id,summary", notes)
        shutil.copy(os.path.join(EXAMPLE, "mapping.yaml"), os.path.join(out, "mapping.yaml"))


def csv_field(v: str) -> str:
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(header + "\n")
        for r in rows:
            f.write(",".join(csv_field(v) for v in r) + "\n")


def esc(v: str) -> str:
    return v.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def write_xml(out, patients, pcs, encs, notes):
    def table(name, element, rows, render):
        with open(os.path.join(out, name + ".xml"), "w", encoding="utf-8") as f:
            f.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<clinic xmlns="urn:example:clinic-export">\n<{name}>\n')
            for r in rows:
                f.write(render(r))
            f.write(f"</{name}>\n</clinic>\n")

    table("patients", "patient", patients, lambda r: f'<patient id="{r[0]}"><name><first>{esc(r[1])}</first><last>{esc(r[2])}</last></name>'
                                                     f'<birthDate>{r[3]}</birthDate><gender>{r[4]}</gender></patient>\n')
    table("conditions", "condition", CONDITIONS, lambda r: f'<condition id="{r[0]}"><name>{esc(r[1])}</name><icd10>{r[2]}</icd10></condition>\n')
    table("patientConditions", "patientCondition", pcs,
          lambda r: f'<patientCondition id="{r[0]}" patient="{r[1]}" condition="{r[2]}"><onset>{r[3]}</onset></patientCondition>\n')
    table("encounters", "encounter", encs, lambda r: f'<encounter id="{r[0]}" patient="{r[1]}"><date>{r[2]}</date><type>{r[3]}</type></encounter>\n')
    table("notes", "note", notes, lambda r: f'<note id="{r[0]}" encounter="{r[1]}"><summary>{esc(r[2])}</summary></note>\n')


if __name__ == "__main__":
    main()
