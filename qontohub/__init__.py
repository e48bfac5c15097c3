"""QontoHub core: settings, tenancy, people, secrets at rest, schedules and health."""
