import Foundation

/// Two exports of one clinic a week apart, and the mapping that converts them: the second changes some patients and
/// conditions, adds patients, and removes patients with their conditions and encounters (as a source system's
/// merge or purge does). What changed is decided here, row by row, so tests can check a diff against it.
public struct MigrationWaves {
    /// The mapping files of the first and the second export (each beside its CSV files).
    public let first: String
    public let second: String
    /// Per resource type: what the second export adds, changes, removes and keeps.
    public let expected: [String: (added: Int, changed: Int, removed: Int, unchanged: Int)]
    /// The conditional URLs of the removed resources.
    public let removed: Set<String>

    public static let patientSystem = "http://example.org/clinic/patient"

    /// Patient i (1…patients) has condition i, and an encounter when i is even. In the second export, patients with
    /// i % 10 == 1 change family name, i % 10 == 2 are removed (with their condition and encounter), conditions with
    /// i % 10 == 3 change onset, and patients/conditions patients+1 … patients+patients/10 are new.
    public static func write(in dir: String, patients: Int, batchEntries: Int = 500) throws -> MigrationWaves {
        var expected: [String: (added: Int, changed: Int, removed: Int, unchanged: Int)] = [
            "Patient": (0, 0, 0, 0), "Condition": (0, 0, 0, 0), "Encounter": (0, 0, 0, 0),
        ]
        var removed = Set<String>()
        func url(_ type: String, _ system: String, _ value: String) -> String { "\(type)?identifier=\(system)|\(value)" }
        for wave in 1...2 {
            let folder = dir + "/wave\(wave)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            var patientRows = ["id,given,family,birth"]
            var conditionRows = ["id,patient,code,onset"]
            var encounterRows = ["id,patient,date"]
            let last = wave == 1 ? patients : patients + patients / 10
            for i in 1...last {
                let isNew = i > patients
                if wave == 2 && !isNew && i % 10 == 2 {
                    if i % 2 == 0 { expected["Encounter"]!.removed += 1; removed.insert(url("Encounter", "http://example.org/clinic/encounter", "E\(i)")) }
                    expected["Patient"]!.removed += 1
                    expected["Condition"]!.removed += 1
                    removed.insert(url("Patient", patientSystem, "P\(i)"))
                    removed.insert(url("Condition", "http://example.org/clinic/condition", "C\(i)"))
                    continue
                }
                let renamed = wave == 2 && !isNew && i % 10 == 1
                let moved = wave == 2 && !isNew && i % 10 == 3
                patientRows.append("P\(i),Given\(i),\(renamed ? "Renamed" : "Family")\(i),19\(50 + i % 50)-0\(1 + i % 9)-1\(i % 10)")
                conditionRows.append("C\(i),P\(i),\(38341003 + i % 7),20\(10 + i % 10)-0\(1 + i % 9)-\(moved ? 2 : 1)\(i % 10)")
                if !isNew && i % 2 == 0 { encounterRows.append("E\(i),P\(i),2024-0\(1 + i % 9)-1\(i % 10)") }
                if wave == 2 {
                    if isNew { expected["Patient"]!.added += 1 } else if renamed { expected["Patient"]!.changed += 1 } else { expected["Patient"]!.unchanged += 1 }
                    if isNew { expected["Condition"]!.added += 1 } else if moved { expected["Condition"]!.changed += 1 } else { expected["Condition"]!.unchanged += 1 }
                    if !isNew && i % 2 == 0 { expected["Encounter"]!.unchanged += 1 }
                }
            }
            try (patientRows.joined(separator: "\n") + "\n").write(toFile: folder + "/patients.csv", atomically: true, encoding: .utf8)
            try (conditionRows.joined(separator: "\n") + "\n").write(toFile: folder + "/conditions.csv", atomically: true, encoding: .utf8)
            try (encounterRows.joined(separator: "\n") + "\n").write(toFile: folder + "/encounters.csv", atomically: true, encoding: .utf8)
            try mapping(batchEntries: batchEntries).write(toFile: folder + "/mapping.yaml", atomically: true, encoding: .utf8)
        }
        return MigrationWaves(first: dir + "/wave1/mapping.yaml", second: dir + "/wave2/mapping.yaml", expected: expected, removed: removed)
    }

    private static func mapping(batchEntries: Int) -> String {
        """
        version: 1
        limits: { batchEntries: \(batchEntries) }
        sources:
          patients: { file: patients.csv }
          conditions: { file: conditions.csv }
          encounters: { file: encounters.csv }
        steps:
          - name: patients
            source: patients
            bundle: batch
            resource:
              resourceType: Patient
              identifier: [{ system: "\(patientSystem)", value: "{{ id }}" }]
              name: [{ family: "{{ family }}", given: ["{{ given }}"] }]
              birthDate: "{{ date(birth, 'yyyy-MM-dd') }}"
          - name: conditions
            source: conditions
            bundle: batch
            resource:
              resourceType: Condition
              identifier: [{ system: http://example.org/clinic/condition, value: "{{ id }}" }]
              code: { coding: [{ system: http://snomed.info/sct, code: "{{ code }}" }] }
              subject: { reference: "{{ ref('patients', patient) }}" }
              onsetDateTime: "{{ dateTime(onset, 'yyyy-MM-dd') }}"
          - name: encounters
            source: encounters
            bundle: batch
            resource:
              resourceType: Encounter
              identifier: [{ system: http://example.org/clinic/encounter, value: "{{ id }}" }]
              status: finished
              class: { system: http://terminology.hl7.org/CodeSystem/v3-ActCode, code: AMB }
              subject: { reference: "{{ ref('patients', patient) }}" }
              period: { start: "{{ date(date, 'yyyy-MM-dd') }}" }

        """
    }
}
