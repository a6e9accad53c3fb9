"""How an alert is written: one module per format, registered in `FORMATS`.

Formats are pure (alert document in, bytes out) and import nothing that knows Kafka, so the
offline commands (`klaxon demo --format`, `klaxon alerts tail --format`) print exactly what an
output would send.

>>> FORMATS["native"].encode({"id": "a1", "severity": "high"})
b'{"id":"a1","severity":"high"}'
>>> sorted(FORMATS)
['ecs', 'native', 'ocsf', 'splunk_hec']
"""

from __future__ import annotations

from pipeline.sinks.formats.base import AlertFormat, JsonFormat
from pipeline.sinks.formats.ecs import EcsFormat
from pipeline.sinks.formats.native import NativeFormat
from pipeline.sinks.formats.ocsf import OcsfFormat
from pipeline.sinks.formats.splunk import SplunkHecFormat

__all__ = [
    "FORMATS",
    "AlertFormat",
    "EcsFormat",
    "JsonFormat",
    "NativeFormat",
    "OcsfFormat",
    "SplunkHecFormat",
]

#: Formats by name.
FORMATS: dict[str, JsonFormat] = {
    f.name: f for f in (NativeFormat(), OcsfFormat(), EcsFormat(), SplunkHecFormat())
}
