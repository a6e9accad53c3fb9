"""The bundled sample audit log that `klaxon demo` and the integration tests replay.

`cluster-sample.jsonl.gz` is made by `python -m replay.sample.generate` (deterministic: the
same bytes on every run); `README.md` beside it tells the attack story it contains.
`malformed.jsonl` is the companion file of unusable lines for dead-letter tests.

>>> SAMPLE_PATH.name, MALFORMED_PATH.name
('cluster-sample.jsonl.gz', 'malformed.jsonl')
"""

from __future__ import annotations

from pathlib import Path

#: The gzip-compressed JSON-lines sample (one `audit.k8s.io/v1` Event per line).
SAMPLE_PATH = Path(__file__).with_name("cluster-sample.jsonl.gz")
#: JSON lines mixing valid events with the unusable lines the dead-letter path must catch.
MALFORMED_PATH = Path(__file__).with_name("malformed.jsonl")

__all__ = ["MALFORMED_PATH", "SAMPLE_PATH"]
