"""Outputs beside the alert topic: SIEM endpoints and chat webhooks, run by ``klaxon outputs``.

Each output reads the alert topic with its own consumer group, so a slow or down SIEM never
slows detection nor another output; it commits an offset only after the output acknowledged
every alert before it (or the alert went to the dead-letter topic because the output refused
it for good). One module per kind, one interface (`base.Output`), one registry (`OUTPUTS`);
the runner (`runner.OutputRunner`) does the reading, filtering, batching, retrying and
committing for all of them.
"""

from __future__ import annotations

from pipeline.outputs.base import Delivery, Output
from pipeline.outputs.elasticsearch import ElasticsearchOutput
from pipeline.outputs.slack import SlackOutput
from pipeline.outputs.splunk import SplunkHecOutput
from pipeline.outputs.webhook import WebhookOutput

__all__ = ["OUTPUTS", "Delivery", "Output"]

#: Output kinds by their ``type`` in the outputs file.
OUTPUTS: dict[str, type[Output]] = {
    o.type: o for o in (WebhookOutput, SplunkHecOutput, ElasticsearchOutput, SlackOutput)
}
