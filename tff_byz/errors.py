"""Errors every layer may raise about the user's settings."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An invalid setting, named with its value and the valid choices (CLI: exit 2)."""
