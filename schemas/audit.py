"""The canonical Kubernetes audit event (`audit.k8s.io/v1` `Event`) as a pydantic model.

The hot path never builds this model (events are plain dicts, see `schemas.normalize`); it
documents and validates the canonical shape, feeds the JSON Schema, and gives the rule linter
the set of known field paths (`field_paths`). It is tolerant: unknown fields are kept, old
`audit.k8s.io/v1beta1` events and events without `apiVersion` validate.

>>> ev = AuditEvent.model_validate(
...     {"auditID": "a1", "stage": "ResponseComplete", "verb": "get", "requestURI": "/api"}
... )
>>> (ev.verb, ev.cluster, ev.apiVersion)
('get', 'default', 'audit.k8s.io/v1')
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from functools import cache
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from schemas.keys import DEFAULT_CLUSTER

Stage = Literal["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
Level = Literal["None", "Metadata", "Request", "RequestResponse"]

#: Stages in the order the apiserver emits them.
STAGES: tuple[Stage, ...] = get_args(Stage)
#: Audit levels, from least to most detailed.
LEVELS: tuple[Level, ...] = get_args(Level)
#: The `apiVersion` every canonical event carries.
CANONICAL_API_VERSION = "audit.k8s.io/v1"
#: `apiVersion` values the normaliser accepts (and rewrites to the canonical one).
ACCEPTED_API_VERSIONS = frozenset({"audit.k8s.io/v1", "audit.k8s.io/v1beta1"})

#: Field paths below which any key may appear (free-form maps and request/response bodies).
FREE_FORM_PREFIXES: tuple[str, ...] = (
    "requestObject",
    "responseObject",
    "annotations",
    "user.extra",
    "impersonatedUser.extra",
)

_TOLERANT = ConfigDict(extra="allow", populate_by_name=True)


class UserInfo(BaseModel):
    """The authenticated (or impersonated) user: `authentication.k8s.io/v1` `UserInfo`."""

    model_config = _TOLERANT

    username: str | None = None
    uid: str | None = None
    groups: list[str] = Field(default_factory=list)
    extra: dict[str, list[str]] = Field(
        default_factory=dict, description="Authenticator-specific data, e.g. EKS `arn`."
    )


class ObjectReference(BaseModel):
    """The object the request is about; absent for list and non-resource requests."""

    model_config = _TOLERANT

    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    apiGroup: str | None = Field(default=None, description='"" is the core API group.')
    apiVersion: str | None = None
    resourceVersion: str | None = None
    subresource: str | None = None


class ResponseStatus(BaseModel):
    """The subset of `metav1.Status` the apiserver records for every response."""

    model_config = _TOLERANT

    code: int | None = Field(default=None, description="HTTP status code.")
    status: str | None = Field(default=None, description='"Success" or "Failure".')
    reason: str | None = None
    message: str | None = None


class AuditEvent(BaseModel):
    """One canonical audit event: `audit.k8s.io/v1` `Event` plus our `cluster`.

    Required are the fields the normaliser requires (`auditID`, `stage`, `verb`); everything
    else the apiserver may omit depending on the audit level and request type.
    """

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        title="KlaxonAuditEvent",
        json_schema_extra={"$id": "https://klaxon.dev/schemas/audit-event.schema.json"},
    )

    kind: Literal["Event"] = "Event"
    apiVersion: str = Field(
        default=CANONICAL_API_VERSION,
        description="Canonical events carry audit.k8s.io/v1; v1beta1 and absent are accepted.",
    )
    level: Level | None = None
    auditID: str = Field(description="Unique per request; shared by all stages of it.")
    stage: Stage
    requestURI: str | None = None
    verb: str = Field(description="Kubernetes verb, or lower-cased HTTP method.")
    user: UserInfo = Field(default_factory=UserInfo)
    impersonatedUser: UserInfo | None = None
    sourceIPs: list[str] = Field(default_factory=list)
    userAgent: str | None = None
    objectRef: ObjectReference | None = None
    responseStatus: ResponseStatus | None = None
    requestObject: dict[str, Any] | list[Any] | None = Field(
        default=None, description="Request body as sent (a JSON-Patch request is a list)."
    )
    responseObject: dict[str, Any] | list[Any] | None = None
    requestReceivedTimestamp: datetime | None = None
    stageTimestamp: datetime | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    cluster: str = Field(
        default=DEFAULT_CLUSTER, description="Klaxon addition: source cluster name."
    )


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `annotation` (`X`, `X | None`), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _paths(model: type[BaseModel], prefix: str) -> set[str]:
    out: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        out.add(path)
        nested = _nested_model(info.annotation)
        if nested is not None:
            out |= _paths(nested, path + ".")
    return out


@cache
def field_paths() -> frozenset[str]:
    """Every dotted field path of `AuditEvent`, intermediate objects included.

    Paths below `FREE_FORM_PREFIXES` are open-ended and not listed.

    >>> paths = field_paths()
    >>> {"objectRef.resource", "user.username", "responseStatus.code", "cluster"} <= paths
    True
    >>> "user" in paths, "requestObject.spec" in paths
    (True, False)
    """
    return frozenset(_paths(AuditEvent, ""))


def is_known_path(path: str) -> bool:
    """Whether `path` is a model field path or lies below a free-form prefix.

    >>> is_known_path("requestObject.spec.containers"), is_known_path("objectRef.nme")
    (True, False)
    """
    if path in field_paths():
        return True
    return any(path.startswith(p + ".") for p in FREE_FORM_PREFIXES)
