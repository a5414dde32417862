"""bp-stream domain package: readings, FHIR, clinical rules, ML features, settings. Pure, no I/O."""
