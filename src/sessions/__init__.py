"""sessions: event-sourced directory-synchronization sessions over gRPC."""


def version() -> str:
    """The installed package's version ("unknown" from a checkout that is
    not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sessions")
    except PackageNotFoundError:
        return "unknown"
