"""The mitre package's exceptions: one root, `MitreError`, so callers can catch them all."""

from __future__ import annotations


class MitreError(Exception):
    """Base of every error raised by the mitre package."""


class UnknownIdError(MitreError, LookupError):
    """An ATT&CK technique, tactic or Microsoft Threat Matrix id that the catalogue lacks."""


class TagError(MitreError, ValueError):
    """A tag that is not a well-formed `attack.*` tag."""


class CatalogueError(MitreError):
    """The bundled catalogue data is missing or inconsistent (a packaging bug)."""
