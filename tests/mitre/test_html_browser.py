"""The HTML heatmap rendered in a real headless chromium: no errors, and it looks right.

Set `KLAXON_ARTIFACTS=<dir>` to keep the screenshot (`mitre-coverage.png`) for a human look.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mitre.coverage import RuleRecord, build_coverage, render_html

pytestmark = pytest.mark.browser

RULES = [
    RuleRecord("r1", "Privileged pod", "high", ("attack.privilege-escalation", "attack.t1611")),
    RuleRecord("r2", "hostPath mount", "high", ("attack.privilege-escalation", "attack.t1611")),
    RuleRecord("r3", "Exec into pod", "medium", ("attack.execution", "attack.t1609")),
    RuleRecord("r4", "Secrets listed", "medium", ("attack.credential-access", "attack.t1552.007")),
    RuleRecord("r5", "Anonymous access", "high", ("attack.initial-access", "attack.t1078.001")),
] + [
    RuleRecord(f"d{i}", f"Discovery {i}", "low", ("attack.discovery", "attack.t1613"))
    for i in range(5)
]

PROBES = (
    "document.querySelectorAll('.cell').length",
    "getComputedStyle(document.querySelector('[data-technique=\"T1611\"]')).backgroundColor",
    "getComputedStyle(document.querySelector('[data-technique=\"T1613\"]')).backgroundColor",
    "getComputedStyle(document.querySelector('[data-technique=\"T1190\"]')).backgroundColor",
    "document.querySelector('[data-technique=\"T1611\"]').title",
    "document.documentElement.scrollWidth",
    "document.querySelectorAll('section.tactic').length",
    "Math.max(...[...document.querySelectorAll('section.tactic')].map(s => s.offsetTop))"
    " - Math.min(...[...document.querySelectorAll('section.tactic')].map(s => s.offsetTop))",
)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_heatmap_renders_without_errors_and_as_designed(
    chromium: Callable[..., Any], tmp_path: Path
) -> None:
    """Chromium loads the page with no console/CSP errors; colours, hovers and layout are right."""
    cov = build_coverage(RULES)
    page = tmp_path / "coverage.html"
    page.write_text(render_html(cov), encoding="utf-8")

    report = chromium(page, PROBES)

    assert report.errors == []
    v = [report.values[p] for p in PROBES]
    assert v[0] == sum(len(c.cells) for c in cov.columns)
    assert v[1] == "rgb(116, 196, 118)"  # 2 rules
    assert v[2] == "rgb(0, 109, 44)"  # 4+ rules
    assert v[3] == "rgb(241, 243, 245)"  # uncovered
    assert "Privileged pod [high]" in v[4] and "hostPath mount [high]" in v[4]
    assert v[5] <= 1600, "the matrix overflows a 1600px-wide window"
    assert v[6] == 9 and v[7] == 0, "tactic columns should sit side by side in one row"
    width, height = _png_size(report.png)
    assert width == 1600 and 400 < height < 6000
    artifacts = os.environ.get("KLAXON_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / "mitre-coverage.png").write_bytes(report.png)


def test_browser_harness_reports_console_errors_and_blocked_loads(
    chromium: Callable[..., Any], tmp_path: Path
) -> None:
    """Control: a page that logs an error, throws, and loads an external image is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none';"
        " script-src 'unsafe-inline'\"></head><body>"
        "<img src='https://example.invalid/x.png'>"
        "<script>console.error('boom'); notDefined();</script></body></html>",
        encoding="utf-8",
    )
    report = chromium(page)
    text = "\n".join(report.errors)
    assert "console: boom" in text
    assert "notDefined is not defined" in text
    assert "example.invalid" in text  # blocked by the page's CSP, reported as a log error
