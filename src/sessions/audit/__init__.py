"""Reading the record: a session's history and its state at any version or
time (history), the tamper-evident chains re-checked from the stored rows
(chain_check), and the whole log exported to and imported from an archive
file (archive). Reads the event store directly, through the store's codec;
the API serves the history, the CLI runs the checks and the archives."""
