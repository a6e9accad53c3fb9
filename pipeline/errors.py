"""The pipeline package's exceptions: one root, `PipelineError`, so callers catch one type.

Errors raised by aiokafka or by broker subprocesses are translated into these at the package
boundary, with enough context (broker log tail, topic name, setting name) to act on.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error raised by the pipeline package."""


class ConfigError(PipelineError):
    """An environment variable or setting has an unusable value."""


class BrokerError(PipelineError):
    """A broker process could not be found, started, reached or stopped."""


class TopicError(PipelineError):
    """A topic could not be created, or exists with an incompatible layout."""


class BrokerNotInstalled(BrokerError):
    """A broker's software (Tansu binary, Kafka jars, Java) is not on this machine."""


class DeliveryError(PipelineError):
    """A message the worker produced was not delivered; offsets must not be committed past it."""


class WorkerError(PipelineError):
    """A worker could not start (no broker, rules that do not load, bad options)."""


class WorkerStalled(WorkerError):
    """Input partitions made no progress for too long with messages waiting."""


class IntakeUnavailable(DeliveryError):
    """An intake could not get a payload acknowledged by the broker (not connected, refused,
    timed out): the sender must retry (the webhook answers 503 with ``Retry-After``)."""


class OutputUnavailable(PipelineError):
    """An output could not take a batch now (down, overloaded, timed out, rate-limited, or
    refusing our credentials): retry later with backoff, never dead-letter for this.
    ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
