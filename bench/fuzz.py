"""``python -m bench fuzz [--count N] [--seed S]``: hostile raw messages through normalise ->
detect -> alert building, as the worker runs them (`pipeline.processing`), without Kafka.

Every input must end accounted for (``events_in == normalised + dead letters + filtered``),
every dead letter must be valid JSON naming a reason and its source, and nothing may raise or
take longer than ``--hang`` seconds. Inputs are mutations of real audit events (the bundled
sample) and of the cloud envelopes: truncation, random bytes, hostile values at random paths
(deep nesting, huge strings and numbers, lone surrogates, wrong types), missing keys, gzip
(also cut short), JSON lines with junk lines, empty and blank messages. Prints the count, the
outcome mix and the rate; exits 1 on any failure. ``tests/pipeline/test_fuzz.py`` runs a few
thousand in CI.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Fuzzer", "Outcome", "check_one", "main"]


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


HOSTILE_VALUES: list[Callable[[random.Random], Any]] = [
    lambda r: None,
    lambda r: r.choice([True, False]),
    lambda r: r.choice([0, -1, 2**63, -(2**63), 2**64 - 1]),
    lambda r: r.choice([1e308, -1e-308, 0.5]),
    lambda r: "x" * r.choice([0, 1, 1000, 100_000]),
    lambda r: "".join(chr(r.randrange(0x20, 0x2FFF)) for _ in range(r.randrange(1, 40))),
    lambda r: _nested(r.choice([10, 100, 254, 300, 600])),
    lambda r: [r.random() for _ in range(r.randrange(0, 50))],
    lambda r: {str(i): i for i in range(r.randrange(0, 50))},
    lambda r: "Bearer eyJhbGciOiJIUzI1NiJ9." + "a" * r.randrange(10, 200),
    lambda r: {"kind": "Secret", "data": {"password": "cGFzc3dvcmQ="}},
]


@dataclass
class Outcome:
    """What a fuzz run saw."""

    inputs: int = 0
    events_in: int = 0
    normalised: int = 0
    dead_letters: int = 0
    filtered: int = 0
    alerts: int = 0
    detect_dead: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)


class Fuzzer:
    """Deterministic hostile payloads from a seed and a corpus of canonical events."""

    def __init__(self, events: list[dict[str, Any]], seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.events = events

    def _event(self) -> dict[str, Any]:
        return orjson.loads(orjson.dumps(self.rng.choice(self.events)))  # a deep copy

    def _poke(self, doc: Any, depth: int = 0) -> Any:
        """Put a hostile value at a random path of ``doc`` (or delete a key there)."""
        r = self.rng
        if isinstance(doc, dict) and doc and depth < 6 and r.random() < 0.7:
            key = r.choice(list(doc))
            if r.random() < 0.15:
                del doc[key]
            else:
                doc[key] = self._poke(doc[key], depth + 1)
            return doc
        if isinstance(doc, list) and doc and depth < 6 and r.random() < 0.7:
            i = r.randrange(len(doc))
            doc[i] = self._poke(doc[i], depth + 1)
            return doc
        return r.choice(HOSTILE_VALUES)(r)

    def _encode(self, doc: Any) -> bytes:
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:  # too deep for orjson: json can write it
            import json

            return json.dumps(doc).encode()

    def payload(self) -> tuple[str, bytes]:
        """One hostile raw message and the name of the way it was made."""
        r = self.rng
        kind = r.choice(
            [
                "mutated-event",
                "mutated-eventlist",
                "truncated",
                "random-bytes",
                "jsonl-with-junk",
                "envelope",
                "gzip",
                "blank",
                "wrong-type",
                "surrogate",
            ]
        )
        if kind == "mutated-event":
            return kind, self._encode(self._poke(self._event()))
        if kind == "mutated-eventlist":
            items = [self._poke(self._event()) for _ in range(r.randrange(1, 8))]
            return kind, self._encode(self._poke({"kind": "EventList", "items": items}))
        if kind == "truncated":
            raw = orjson.dumps(self._event())
            return kind, raw[: r.randrange(0, len(raw))]
        if kind == "random-bytes":
            return kind, bytes(r.randrange(256) for _ in range(r.randrange(0, 300)))
        if kind == "jsonl-with-junk":
            lines = [orjson.dumps(self._event()) for _ in range(r.randrange(1, 6))]
            lines.insert(
                r.randrange(len(lines) + 1), r.choice([b"{", b"null", b"[]", b"  ", b"\xff"])
            )
            return kind, b"\n".join(lines)
        if kind == "envelope":
            ev = self._event()
            log = orjson.dumps(ev).decode()
            env = r.choice(
                [
                    {"records": [{"category": "kube-audit", "properties": {"log": log}}]},
                    {"logEvents": [{"message": log}], "logGroup": "/aws/eks/c/cluster"},
                    {
                        "protoPayload": {
                            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                            "methodName": "io.k8s.core.v1.pods.get",
                        }
                    },
                ]
            )
            return kind, self._encode(self._poke(env))
        if kind == "gzip":
            raw = gzip.compress(orjson.dumps({"kind": "EventList", "items": [self._event()]}))
            return kind, raw if r.random() < 0.5 else raw[: r.randrange(1, len(raw))]
        if kind == "blank":
            return kind, r.choice([b"", b" ", b"\n\n", b"\t \r\n"])
        if kind == "wrong-type":
            return kind, r.choice([b"1", b'"s"', b"[1,2,3]", b"true", b"[[[]]]", b'{"items":5}'])
        ev = orjson.dumps(self._event())
        return kind, ev.replace(b'"verb":"', b'"verb":"\\ud800', 1)

    def payloads(self, count: int) -> Iterator[tuple[str, bytes]]:
        for _ in range(count):
            yield self.payload()


def check_one(
    payload: bytes, index: int, engine: Any, to_alert: Callable[[Any], dict[str, Any]], out: Outcome
) -> None:
    """Run one payload through normalise -> detect -> alerts; record any broken rule."""
    from pipeline.processing import Source, detect_message, normalise_message

    source = Source("raw", 0, index)
    n = normalise_message(payload, source, partitions=4, cluster="fuzz")
    out.inputs += 1
    out.events_in += n.events_in
    out.normalised += n.normalised
    out.dead_letters += len(n.dead_letters)
    out.filtered += sum(n.filtered.values())
    if n.events_in != n.normalised + len(n.dead_letters) + sum(n.filtered.values()):
        out.failures.append(f"input {index}: accounting does not balance")
    for letter in n.dead_letters:
        doc = orjson.loads(letter)
        if not doc.get("reason") or doc.get("source", {}).get("offset") != index:
            out.failures.append(f"input {index}: dead letter without reason or source")
    for i, msg in enumerate(n.messages):
        decoded = msg.events if i % 2 else None  # both the handoff and the parsing path
        d = detect_message(msg.value, Source("events", msg.partition, index), engine, to_alert,
                           decoded=decoded)  # fmt: skip
        out.alerts += len(d.alerts)
        out.detect_dead += len(d.dead_letters)


def run(count: int, seed: int, hang: float, log: Callable[[str], None] | None = None) -> Outcome:
    """Fuzz ``count`` inputs; failures are listed in the outcome, never raised."""
    from detections import Engine, load_rules
    from detections.alert import to_alert
    from replay.sample.generate import build_sample

    engine = Engine(load_rules())
    events = build_sample().events[:2000]
    fuzzer = Fuzzer(events, seed)
    out = Outcome()
    for index, (kind, payload) in enumerate(fuzzer.payloads(count)):
        out.kinds[kind] += 1
        start = time.perf_counter()
        try:
            check_one(payload, index, engine, to_alert, out)
        except Exception as exc:  # the finding: print it with the input that caused it
            out.failures.append(f"input {index} ({kind}) raised {exc!r}: {payload[:200]!r}")
        took = time.perf_counter() - start
        out.slowest = max(out.slowest, took)
        if took > hang:
            out.failures.append(f"input {index} ({kind}) took {took:.1f}s")
        if log is not None and index and index % 20_000 == 0:
            log(f"  {index} inputs...")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hang", type=float, default=2.0, help="seconds that count as a hang")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = run(args.count, args.seed, args.hang, log=lambda s: print(s, file=sys.stderr))
    took = time.perf_counter() - start
    print(
        f"fuzz: {out.inputs} inputs (seed {args.seed}) in {took:.1f}s = {out.inputs / took:,.0f}/s"
    )
    print(f"  kinds: {dict(sorted(out.kinds.items()))}")
    print(
        f"  items {out.events_in}: normalised {out.normalised}, dead letters {out.dead_letters},"
        f" filtered {out.filtered}; alerts {out.alerts}, detect dead letters {out.detect_dead}"
    )
    print(f"  slowest input {out.slowest * 1000:.1f} ms; failures {len(out.failures)}")
    for failure in out.failures[:20]:
        print(f"  FAIL {failure}")
    return 1 if out.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
