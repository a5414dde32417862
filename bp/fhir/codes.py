"""Code systems and codes of the blood-pressure profile: LOINC, UCUM, categories, statuses, Bundle types."""

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
VITAL_SIGNS_BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"

BP_PANEL = "85354-9"
BP_PANEL_LEGACY = "55284-4"
BP_PANEL_OLD = "35094-2"
SYSTOLIC = "8480-6"
DIASTOLIC = "8462-4"

CONTENT_TYPE = "application/fhir+json"

ACCEPTED_STATUSES: tuple[str, ...] = ("final", "amended", "corrected", "preliminary")
BUNDLE_TYPES: tuple[str, ...] = (
    "collection",
    "transaction",
    "batch",
    "searchset",
    "document",
    "message",
    "history",
    "transaction-response",
    "batch-response",
)
BP_PANEL_CODES: tuple[str, ...] = (BP_PANEL, BP_PANEL_LEGACY, BP_PANEL_OLD)
_COMPONENT_CODES = (SYSTOLIC, DIASTOLIC)
LOINC_SYSTEMS = frozenset(
    {LOINC, "http://loinc.org/", "https://loinc.org", "https://loinc.org/", "urn:oid:2.16.840.1.113883.6.1"}
)
UCUM_SYSTEMS = frozenset({UCUM, "urn:oid:2.16.840.1.113883.6.8"})
