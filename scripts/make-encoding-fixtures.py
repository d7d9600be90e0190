#!/usr/bin/env python3
"""Writes fixtures/encodings/ from fixtures/medplum-example: the guide's example with accented names (all in
Latin-1, so that every encoding can hold them), as UTF-8 (the reference), Windows-1252, ISO-8859-1 and UTF-16 CSV,
UTF-16 XML, and fixed-width text. Each folder converts to the same artifacts as utf-8/ (tests check it).

usage: scripts/make-encoding-fixtures.py   (run from anywhere; rewrites fixtures/encodings/*/)
"""
import os, re, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "fixtures", "medplum-example")
OUT = os.path.join(ROOT, "fixtures", "encodings")
NAMES = {"John": "José", "Doe": "Müller", "Jane": "Zoë", "Smith": "Ångström"}
CSVS = ["patients.csv", "conditions.csv", "patient_conditions.csv", "encounters.csv", "notes.csv"]


def accented(text):
    for plain, fancy in NAMES.items():
        text = text.replace(plain, fancy)
    return text


def read(name):
    with open(os.path.join(SRC, name), encoding="utf-8") as f:
        return f.read()


def mapping(name, extra):
    """The example's mapping with `extra` (e.g. ', encoding: utf-16') added to every source."""
    text = read(name)
    return re.sub(r"(\w+): \{ file: ([\w.-]+) \}", lambda m: "%s: { file: %s%s }" % (m.group(1), m.group(2), extra), text)


def write(folder, name, data):
    os.makedirs(os.path.join(OUT, folder), exist_ok=True)
    with open(os.path.join(OUT, folder, name), "wb") as f:
        f.write(data)


for folder, codec, extra in [("utf-8", "utf-8", ""), ("windows-1252", "cp1252", ", encoding: windows-1252"),
                             ("iso-8859-1", "latin-1", ", encoding: iso-8859-1"), ("utf-16", "utf-16", ", encoding: utf-16")]:
    shutil.rmtree(os.path.join(OUT, folder), ignore_errors=True)
    for name in CSVS:
        write(folder, name, accented(read(name)).encode(codec))
    write(folder, "mapping.yaml", mapping("mapping.yaml", extra).encode("utf-8"))

# XML in UTF-16 (with a byte order mark), as SQL Server's FOR XML and .NET write it.
shutil.rmtree(os.path.join(OUT, "xml-utf-16"), ignore_errors=True)
for name in ["export.xml", "notes-mysql.xml"]:
    text = accented(read(name))
    text = re.sub(r'^<\?xml version="1.0"( encoding="UTF-8")?\?>', '<?xml version="1.0" encoding="UTF-16"?>', text)
    write("xml-utf-16", name, text.encode("utf-16"))
write("xml-utf-16", "mapping-xml.yaml", read("mapping-xml.yaml").encode("utf-8"))

# Fixed-width: every CSV as padded columns under a header line, in Windows-1252 with CRLF line ends.
shutil.rmtree(os.path.join(OUT, "fixed-width"), ignore_errors=True)
sources = []
for name in CSVS:
    rows = [line.split(",", 2 if name == "notes.csv" else -1) for line in accented(read(name)).splitlines() if line]
    rows = [[cell.strip('"') for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(len(rows[0]))]
    lines = ["".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() if i == 0 else "".join(cell.ljust(w) for cell, w in zip(row, widths))
             for i, row in enumerate(rows)]
    base = name[:-4]
    write("fixed-width", base + ".txt", ("\r\n".join(lines) + "\r\n").encode("cp1252"))
    start, cols = 1, []
    for header, w in zip(rows[0], widths):
        cols.append("      %s: { start: %d, width: %d }" % (header, start, w))
        start += w
    sources.append("  %s:\n    file: %s.txt\n    format: fixed-width\n    encoding: windows-1252\n    header: 1\n    columns:\n%s"
                   % (base, base, "\n".join(cols)))
text = read("mapping.yaml")
block = re.search(r"^sources:\n(?:  .*\n)+", text, re.M)
text = text[:block.start()] + "sources:\n" + "\n".join(sources) + "\n" + text[block.end():]
write("fixed-width", "mapping.yaml", text.encode("utf-8"))
print("fixtures/encodings: written")
