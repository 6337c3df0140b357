"""sessions: event-sourced directory-synchronization sessions over gRPC."""
