import FHIRMapping
import Testing

/// Patients and their care plans: the care plan step is what each test gets wrong in one way.
private func carePlanMapping(_ carePlan: String) -> String {
    """
    version: 1
    constants:
      base: http://example.org
    sources:
      patients: { file: patients.csv }
      careplans: { file: careplans.csv }
      encounters: { file: encounters.csv }
    maps:
      status: { A: active, C: completed }
    steps:
      - name: patients
        source: patients
        bundle: batch
        resource:
          resourceType: Patient
          identifier: [{ system: "{{ base }}/patient", value: "{{ patient_id }}" }]
      - name: encounters
        source: encounters
        bundle: batch
        resource:
          resourceType: Encounter
          identifier: [{ system: "{{ base }}/encounter", value: "{{ encounter_id }}" }]
          status: finished
          class: { system: http://terminology.hl7.org/CodeSystem/v3-ActCode, code: AMB }
      - name: careplans
        source: careplans
        bundle: batch
        resource:
    \(carePlan.split(separator: "\n").map { "      " + $0 }.joined(separator: "\n"))
    """
}

private let fields = [
    "patients": ["patient_id"],
    "encounters": ["encounter_id"],
    "careplans": ["careplan_id", "patient_id", "encounter_id", "state"],
]

private let validCarePlan = """
    resourceType: CarePlan
    identifier: [{ system: "{{ base }}/careplan", value: "{{ careplan_id }}" }]
    status: "{{ map(state, 'status') }}"
    intent: plan
    subject: { reference: "{{ ref('patients', patient_id) }}" }
    encounter: { reference: "{{ ref('encounters', encounter_id) }}" }
    """

struct TemplateCheckTests {
    @Test func aCarePlanThatFillsItsRequiredElementsWithAllowedCodesCompiles() throws {
        _ = try compileMapping(carePlanMapping(validCarePlan), fields: fields)
    }

    @Test func aReferenceToAStepOfTheWrongResourceTypeIsAnErrorAtTheRefCall() throws {
        let yaml = carePlanMapping(validCarePlan.replacingOccurrences(of: "ref('patients', patient_id)", with: "ref('encounters', patient_id)"))
        let e = try #require(mappingError(yaml, fields: fields))
        #expect(e.message == "CarePlan.subject may refer to Group, Patient, but this gives a reference to Encounter; check the step that ref() names")
        let line = yaml.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains("ref('encounters', patient_id)") }! + 1
        #expect(e.line == line)
        #expect(e.column == yaml.split(separator: "\n", omittingEmptySubsequences: false)[line - 1].distance(
            from: yaml.split(separator: "\n", omittingEmptySubsequences: false)[line - 1].startIndex,
            to: yaml.split(separator: "\n", omittingEmptySubsequences: false)[line - 1].range(of: "ref(")!.lowerBound) + 1)
    }

    @Test func aFixedCodeOutsideARequiredValueSetIsAnErrorWithTheCodesItHas() throws {
        let yaml = carePlanMapping(validCarePlan.replacingOccurrences(of: "intent: plan", with: "intent: plans"))
        let e = try #require(mappingError(yaml, fields: fields))
        #expect(e.message.hasPrefix("CarePlan.intent is bound to the required value set http://hl7.org/fhir/ValueSet/care-plan-intent, which has no code 'plans' (did you mean 'plan'?)"), "\(e)")
        #expect(e.message.contains("its codes are option, order, plan, proposal"))
        #expect(e.line == yaml.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains("intent: plans") }! + 1)
    }

    @Test func aValueMapIntoARequiredValueSetMayGiveOnlyItsCodes() throws {
        let yaml = carePlanMapping(validCarePlan).replacingOccurrences(of: "status: { A: active, C: completed }", with: "status: { A: active, C: complete }")
        let e = try #require(mappingError(yaml, fields: fields))
        #expect(e.message.contains("CarePlan.status is bound to the required value set http://hl7.org/fhir/ValueSet/request-status, but map 'status' gives 'complete', which it does not have (did you mean 'completed'?)"), "\(e)")
    }

    @Test func aFixedCodeInABoundCodeableConceptIsChecked() throws {
        let condition = """
            version: 1
            sources: { conditions: { file: conditions.csv } }
            steps:
              - name: conditions
                source: conditions
                bundle: batch
                resource:
                  resourceType: Condition
                  identifier: [{ system: http://example.org/condition, value: "{{ id }}" }]
                  clinicalStatus: { coding: [{ system: http://terminology.hl7.org/CodeSystem/condition-clinical, code: activ }] }
                  subject: { reference: "Patient/1" }
            """
        let e = try #require(mappingError(condition, fields: ["conditions": ["id"]]))
        #expect(e.message.contains("Condition.clinicalStatus.coding[0].code is bound to the required value set http://hl7.org/fhir/ValueSet/condition-clinical, which has no code 'activ' (did you mean 'active'?)"), "\(e)")
    }

    @Test func aRequiredElementTheTemplateNeverFillsIsAnErrorAtTheTemplate() throws {
        let yaml = carePlanMapping(validCarePlan.replacingOccurrences(of: "intent: plan\n", with: ""))
        let e = try #require(mappingError(yaml, fields: fields))
        #expect(e.message == "CarePlan requires 'intent' (at least 1), which the template never fills; add it, or every resource would be invalid")
        #expect(e.line == yaml.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains("resourceType: CarePlan") }! + 1)
    }

    @Test func aRequiredElementOfANestedObjectIsCheckedToo() throws {
        let yaml = carePlanMapping(validCarePlan + "\nactivity: [{ detail: { code: { text: walk } } }]")
        let e = try #require(mappingError(yaml, fields: fields))
        #expect(e.message.hasPrefix("CarePlan.activity[0].detail requires 'status'"), "\(e)")
    }

    @Test func aRequiredChoiceElementIsFilledByAnyOfItsTypes() throws {
        let request = """
            version: 1
            sources: { rx: { file: rx.csv } }
            steps:
              - name: rx
                source: rx
                bundle: batch
                resource:
                  resourceType: MedicationRequest
                  identifier: [{ system: http://example.org/rx, value: "{{ id }}" }]
                  status: active
                  intent: order
                  medicationCodeableConcept: { text: "{{ drug }}" }
                  subject: { reference: "Patient/1" }
            """
        _ = try compileMapping(request, fields: ["rx": ["id", "drug"]])
        let e = try #require(mappingError(request.replacingOccurrences(of: "medicationCodeableConcept: { text: \"{{ drug }}\" }", with: "note: [{ text: \"{{ drug }}\" }]"),
                                          fields: ["rx": ["id", "drug"]]))
        #expect(e.message == "MedicationRequest requires one of medicationCodeableConcept, medicationReference… (at least 1), which the template never fills; add it, or every resource would be invalid")
    }
}
