"""``python -m bench NAME [ARGS]``: run one benchmark module's ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """Benchmark module names in this package."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    """Dispatch to ``bench.<name>.main``; exit 2 with the list of benchmarks on misuse."""
    names = available()
    if not argv or argv[0] not in names:
        print(f"usage: python -m bench {{{','.join(names)}}} [ARGS]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
