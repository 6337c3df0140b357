"""The event store: the eventsourcing Application that loads aggregates, runs
the domain's commands and saves their events; store URLs; the clock."""
