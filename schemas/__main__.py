"""``python -m schemas [--check]``: regenerate (or check) the checked-in JSON Schemas."""

from __future__ import annotations

import argparse
import sys

from schemas.errors import SchemaDriftError
from schemas.jsonschema import JSON_DIR, check_json_schemas, write_json_schemas


def main(argv: list[str] | None = None) -> int:
    """Write `schemas/json/*.schema.json`; with ``--check`` only report drift (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        try:
            check_json_schemas()
        except SchemaDriftError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"JSON Schemas in {JSON_DIR} are current")
        return 0
    for path in write_json_schemas():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
