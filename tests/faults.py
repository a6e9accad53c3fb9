"""Fault injection for the tests: Apache Kafka nodes that can be crashed and brought back.

Kept out of `pipeline.brokers` (which ships): only tests kill brokers.
"""

from __future__ import annotations

import asyncio

from pipeline.brokers import KafkaCluster, _ensure_free, _run_blocking

__all__ = ["FaultyKafka"]


class FaultyKafka(KafkaCluster):
    """`KafkaCluster` whose nodes the tests stop, kill and restart (same ports, same data)."""

    def stop_node(self, i: int, timeout: float = 30.0) -> None:
        """Shut node ``i`` down cleanly (SIGTERM: controlled shutdown), SIGKILL after timeout."""
        self._children[i].terminate(timeout)

    def kill_node(self, i: int) -> None:
        """Kill node ``i`` with SIGKILL: a crash, no controlled shutdown."""
        self._children[i].kill()

    def start_node(self, i: int) -> None:
        """Restart node ``i`` with its old ports and data; wait until it is registered again."""
        _run_blocking(lambda: self.astart_node(i))

    async def astart_node(self, i: int) -> None:
        """`start_node` for async callers."""
        if self._children[i].alive:
            return
        _ensure_free(*self._ports[i])
        self._children[i] = self._child(i)
        self._children[i].spawn()
        await self._wait_ready([i])

    async def astop_node(self, i: int, timeout: float = 30.0) -> None:
        """`stop_node` for async callers."""
        await asyncio.to_thread(self.stop_node, i, timeout)

    def alive(self, i: int) -> bool:
        """Whether node ``i``'s process is running."""
        return self._children[i].alive
