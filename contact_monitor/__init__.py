"""contact-monitor: the service core (settings, app, CLI, storage, activity stream)."""

__version__ = "0.1.0"
