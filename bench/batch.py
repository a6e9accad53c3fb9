"""The worker's per-event work in one process, by events per batch (``python -m bench batch``).

Decode (parse, check, redact), the engine (full pack) and the stateful families (first-seen,
correlations, anomaly) run one after the other on each batch, as the worker runs them, but
with no Kafka, no Faust and nothing else between them: this is the floor of a worker's CPU
per event, and the price of batches too large for the CPU's caches (parsed, a sample event
takes about 3.2 KB, over three times its JSON; this VM's L2 holds 1 MB per core). Rounds
alternate the batch sizes so each round shares the machine's state; the best round per size
is printed (CPU time of this thread), with its ratio to the first size given. Event mix: the
bundled sample, cycled with fresh ``auditID``\\ s (``bench pipeline``'s), as JSON lines.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Row", "main", "run"]


@dataclass(frozen=True)
class Row:
    """Best round's CPU µs per event for one batch size."""

    batch: int
    decode: float
    engine: float
    stateful: float

    @property
    def total(self) -> float:
        return self.decode + self.engine + self.stateful


def run(batches: Sequence[int], *, events: int = 20_000, rounds: int = 8) -> list[Row]:
    """Best of ``rounds`` (after a warm-up round) per batch size, ``events`` per round."""
    from bench.pipeline import events as sample_events
    from pipeline.config import Settings
    from pipeline.reload import build_engine
    from pipeline.stateful import StatefulProcessor, options_from_settings
    from pipeline.worker import tune_gc
    from schemas.normalize import decode_payload

    settings = Settings()
    engine, _ = build_engine(
        list(settings.rules_paths), list(settings.lists_paths), settings.rule_selection()
    )
    options = options_from_settings(settings)
    lines = list(sample_events(events * rounds))
    processors = {
        n: StatefulProcessor(engine.ruleset, partitions=1, options=options) for n in batches
    }
    threshold = tune_gc()  # as the worker does
    best: dict[int, Row] = {}
    clock = time.thread_time
    try:
        for r in range(rounds + 1):  # round 0 warms the engine's memos and the state up
            chunk = lines[(r % rounds) * events : (r % rounds + 1) * events]
            for n in batches:
                payloads = [b"\n".join(chunk[i : i + n]) for i in range(0, events, n)]
                processor = processors[n]
                spent = [0.0, 0.0, 0.0]
                for k, payload in enumerate(payloads):
                    t0 = clock()
                    decoded = decode_payload(payload).events
                    t1 = clock()
                    matches = engine.evaluate_batch(decoded)
                    t2 = clock()
                    processor.process(decoded, matches, 0, topic="events", offset=r * events + k)
                    t3 = clock()
                    spent[0] += t1 - t0
                    spent[1] += t2 - t1
                    spent[2] += t3 - t2
                row = Row(n, *(s * 1e6 / events for s in spent))
                if r and (n not in best or row.total < best[n].total):
                    best[n] = row
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
    return [best[n] for n in batches]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench batch", description=__doc__)
    parser.add_argument(
        "--batches", default="50,100,200,400,1000", help="events per batch, comma-separated"
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds per size")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    rows = run(batches, events=args.events, rounds=args.rounds)
    print(f"{'batch':>6} {'decode':>7} {'engine':>7} {'stateful':>8} {'total':>7}  x first")
    for row in rows:
        print(
            f"{row.batch:>6} {row.decode:>7.2f} {row.engine:>7.2f} {row.stateful:>8.2f}"
            f" {row.total:>7.2f}  {row.total / rows[0].total:.2f}"
        )
    print("CPU µs/event, best round; sample mix as JSON lines; no Kafka, no Faust")
    return 0
