"""The exception hierarchy of the `schemas` package (one root: `SchemaError`)."""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by `schemas`."""


class SchemaDriftError(SchemaError):
    """A checked-in JSON Schema no longer matches the model it was generated from."""
