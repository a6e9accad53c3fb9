"""Slack (or any chat webhook taking ``{"text": …}``, such as Mattermost or Rocket.Chat).

One message per batch, one line per alert. The webhook URL is the credential: give it with
``url_env`` or ``url_file``. Slack answers 429 with ``Retry-After`` when rate-limited
(retried), 400 ``invalid_payload`` (refused) and 403/404 for a revoked hook (retried until an
operator fixes it).

>>> from schemas.alert import example_alert
>>> print(slack_line(example_alert()))  # doctest: +NORMALIZE_WHITESPACE
:red_circle: *HIGH* Privileged container created: minikube-user created privileged pod
default/nginx (cluster `default`, T1611)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from pipeline.outputs.base import Delivery, Output, classify

if TYPE_CHECKING:
    import aiohttp

__all__ = ["SlackOutput", "slack_line"]

ICONS = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "medium": ":large_orange_circle:",
    "low": ":large_yellow_circle:",
    "informational": ":white_circle:",
}
#: Slack shows at most 40,000 characters of a message's text.
MAX_TEXT = 39_000


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_line(alert: dict[str, Any]) -> str:
    """One alert as one line of Slack mrkdwn (user text escaped)."""
    severity = str(alert.get("severity") or "")
    techniques = ",".join(
        t.get("id", "") for t in (alert.get("attack") or {}).get("techniques", [])
    )
    where = f"cluster `{_escape(str(alert.get('cluster') or '?'))}`"
    title = _escape((alert.get("rule") or {}).get("title", ""))
    return (
        f"{ICONS.get(severity, ':grey_question:')} *{severity.upper()}* "
        f"{title}: {_escape(alert.get('summary', ''))} "
        f"({where}{', ' + techniques if techniques else ''})"
    )


class SlackOutput(Output):
    """A chat incoming webhook."""

    type: ClassVar[str] = "slack"
    default_format: ClassVar[str | None] = None

    async def deliver(
        self, http: aiohttp.ClientSession, alerts: Sequence[dict[str, Any]]
    ) -> Delivery:
        text = "\n".join(slack_line(a) for a in alerts)
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "\n…"
        reply = await self.post(http, orjson.dumps({"text": text}), "application/json")
        return classify(reply, len(alerts))
