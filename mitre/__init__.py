"""MITRE ATT&CK for Kubernetes detections: a pinned offline catalogue, tag checks, coverage.

`mitre` imports nothing else from Klaxon. `mitre.attack` holds the catalogue (ATT&CK v18.1
Containers techniques plus the Microsoft Threat Matrix for Kubernetes and its ATT&CK mapping)
and the `attack.*` tag lookups and lint; `mitre.coverage` turns rules' tags into a coverage
matrix, an ATT&CK Navigator layer and an HTML heatmap.

>>> from mitre import parse_tag
>>> parse_tag("attack.t1609").name
'Container Administration Command'
"""

from mitre.attack import (
    Catalogue,
    MtmkTechnique,
    Tactic,
    Technique,
    catalogue,
    mtmk,
    parse_tag,
    tactic,
    tactics,
    technique,
    techniques,
    validate_mtmk,
    validate_tags,
)
from mitre.errors import CatalogueError, MitreError, TagError, UnknownIdError

__all__ = [
    "Catalogue",
    "CatalogueError",
    "MitreError",
    "MtmkTechnique",
    "Tactic",
    "TagError",
    "Technique",
    "UnknownIdError",
    "catalogue",
    "mtmk",
    "parse_tag",
    "tactic",
    "tactics",
    "technique",
    "techniques",
    "validate_mtmk",
    "validate_tags",
]
