"""``klaxon native build|status``: compile the hot path with mypyc (`schemas.native`).

``build`` compiles `schemas.native.MODULES` into ``.cache/native/<tag>/`` (or
``KLAXON_NATIVE_DIR``): mypyc writes C, the C compiler builds one extension per module and
a shared runtime, and the directory is marked complete last, so an interrupted build is
never used. It needs mypy (a dev dependency: mypyc ships in it), a C compiler and the
Python headers; without them it says what is missing and the sources keep running. A build
of the current sources is reused; other builds in the directory are removed. ``status``
says whether this process would import compiled modules.

mypyc (part of mypy) rather than Cython: the modules stay the plain mypy-strict Python the
tests, ruff and the doctests read, and one switch (``KLAXON_NATIVE=0``) runs them as such.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path

from klaxon.cli import needs_subcommand
from schemas.native import COMPLETE, MODULES, build_dir, build_tag, in_use, native_root

__all__ = ["NativeBuildError", "build", "missing_tools", "mypy_config", "register"]

_ROOT = Path(__file__).resolve().parents[1]

# Run in a scratch directory, so setuptools does not read the project's pyproject.toml.
_SETUP = """
import sys
from mypyc.build import mypycify
from setuptools import setup
config, lib, temp, jobs, *modules = sys.argv[1:]
setup(
    name="klaxon-native",
    ext_modules=mypycify(
        ["--config-file", config, *modules], opt_level="3", debug_level="0", multi_file=True
    ),
    script_args=["build_ext", "--build-lib", lib, "--build-temp", temp, "-j", jobs],
)
"""


class NativeBuildError(Exception):
    """The compiled modules could not be built (the sources still run)."""


def missing_tools() -> list[str]:
    """What a build needs and this machine lacks (empty: it can build)."""
    missing: list[str] = []
    try:
        import mypyc  # noqa: F401
    except ImportError:
        missing.append("mypyc (pip install mypy: Klaxon's dev extra has it)")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(os.environ.get("CC", compiler)) is None:
        missing.append(f"a C compiler ({compiler})")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        missing.append(f"the Python headers ({headers}; Debian: python3-dev)")
    return missing


def mypy_config(root: Path, cache_dir: Path | None = None) -> str:
    """mypy's settings for the build, from the project's ``[tool.mypy]`` (its per-module
    overrides included), without ``packages``: the build names its files itself.
    ``cache_dir``: mypy's incremental cache, kept between builds (a cold one costs minutes)."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mypy = dict(project.get("tool", {}).get("mypy", {}))
    overrides = mypy.pop("overrides", [])
    mypy.pop("packages", None)
    lines = ["[mypy]", *_ini(mypy), f"mypy_path = {root}"]
    if cache_dir is not None:
        lines.append(f"cache_dir = {cache_dir}")
    for override in overrides:
        modules = override.pop("module")
        names = modules if isinstance(modules, list) else [modules]
        lines += [f"[mypy-{','.join(names)}]", *_ini(override)]
    return "\n".join(lines) + "\n"


def _ini(section: dict[str, object]) -> list[str]:
    return [
        f"{key} = {','.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in section.items()
    ]


def build(
    root: Path = _ROOT,
    *,
    modules: tuple[str, ...] = MODULES,
    jobs: int | None = None,
    force: bool = False,
    announce: bool = False,
) -> Path:
    """Compile ``modules`` (files under ``root``); returns the build's directory (reused if
    current). ``announce``: say on stderr that a build starts (it takes minutes)."""
    target = build_dir(root, modules)
    if (target / COMPLETE).is_file() and not force:
        return target
    missing = missing_tools()
    if missing:
        raise NativeBuildError("cannot compile: missing " + "; ".join(missing))
    home = native_root(root)
    home.mkdir(parents=True, exist_ok=True)
    if announce:
        print(f"compiling {len(modules)} modules with mypyc (a few minutes)...", file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="build-", dir=home) as scratch:
        work = Path(scratch)
        config = mypy_config(root, cache_dir=home / ".mypy-cache")
        (work / "mypy.ini").write_text(config, encoding="utf-8")
        lib = work / "lib"
        command = [
            sys.executable,
            "-c",
            _SETUP,
            str(work / "mypy.ini"),
            str(lib),
            str(work / "temp"),
            str(jobs or os.cpu_count() or 1),
            *(str(root / m) for m in modules),
        ]
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-25:]
            raise NativeBuildError("mypyc build failed:\n" + "\n".join(tail))
        (lib / COMPLETE).write_text(
            f"{build_tag(root, modules)}\n{len(modules)} modules"
            f" in {time.monotonic() - started:.0f}s\n",
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        lib.rename(target)
    for other in home.iterdir():  # older builds: sources changed since
        if other != target and not other.name.startswith(("build-", ".")):
            shutil.rmtree(other, ignore_errors=True)
    return target


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``native build`` and ``native status`` to the ``klaxon`` parser."""
    p = subparsers.add_parser("native", help="compile the hot path with mypyc (optional)")
    sub = p.add_subparsers(dest="native_command", metavar="COMMAND")
    b = sub.add_parser(
        "build",
        help="compile the hot modules for the current sources (reused if current)",
        description="Compile the engine, normaliser, redaction and stateful families with"
        " mypyc into .cache/native (KLAXON_NATIVE_DIR). Needs mypy, a C compiler and the"
        " Python headers; without them the sources run.",
    )
    b.add_argument("--jobs", type=int, default=None, help="parallel C compiles (default: cores)")
    b.add_argument("--force", action="store_true", help="rebuild even if current")
    b.add_argument(
        "--if-possible",
        action="store_true",
        help="exit 0 with a warning when the tools are missing (the sources run)",
    )
    b.set_defaults(func=_build)
    s = sub.add_parser("status", help="say whether compiled modules are in use")
    s.set_defaults(func=_status)

    needs_subcommand(p)


def _build(args: argparse.Namespace) -> int:
    missing = missing_tools() if args.if_possible else []
    if missing:
        print(f"klaxon native: not compiled, missing {'; '.join(missing)}", file=sys.stderr)
        return 0
    try:
        target = build(jobs=args.jobs, force=args.force, announce=True)
    except NativeBuildError as exc:
        print(f"klaxon native: {exc}", file=sys.stderr)
        return 1
    print(f"compiled modules: {target}")
    return 0


def _status(_args: argparse.Namespace) -> int:
    found = in_use()
    if found is not None:
        print(f"compiled modules in use: {found} ({len(MODULES)} modules)")
    elif os.environ.get("KLAXON_NATIVE", "1") == "0":
        print("sources in use (KLAXON_NATIVE=0)")
    else:
        where = build_dir(_ROOT)
        print(f"sources in use: no build of these sources ({where}); run `klaxon native build`")
    return 0
