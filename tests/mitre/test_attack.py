"""Specification of the ATT&CK catalogue, tag parsing/validation and the Microsoft matrix."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import mitre
from mitre import (
    Catalogue,
    CatalogueError,
    MitreError,
    Tactic,
    TagError,
    Technique,
    UnknownIdError,
    catalogue,
    mtmk,
    parse_tag,
    tactic,
    technique,
    validate_mtmk,
    validate_tags,
)

DATA = Path(mitre.__file__).parent / "data"
SHARED_ATTACK = Path(__file__).resolve().parents[3] / "shared" / "mitre" / "attack-containers.json"
CONTAINERS_MATRIX = [
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "impact",
]


# --- the catalogue --------------------------------------------------------------------------


def test_catalogue_is_attack_18_1_containers() -> None:
    """The bundled catalogue is ATT&CK v18.1 with the 48 Containers techniques."""
    cat = catalogue()
    assert cat.version == "18.1"
    assert len([t for t in cat.techniques if t.containers]) == 48


def test_matrix_columns_follow_the_containers_matrix_order() -> None:
    """The Containers matrix has nine tactic columns in ATT&CK order, with their TA ids."""
    cols = catalogue().matrix_tactics()
    assert [t.shortname for t in cols] == CONTAINERS_MATRIX
    assert [t.id for t in cols] == [
        "TA0001", "TA0002", "TA0003", "TA0004", "TA0005", "TA0006", "TA0007", "TA0008", "TA0040",
    ]  # fmt: skip


@pytest.mark.skipif(not SHARED_ATTACK.is_file(), reason="../shared/mitre is not present")
def test_containers_techniques_match_the_pinned_source() -> None:
    """Every Containers technique's id, name, tactics and parent equal the shared v18.1 source."""
    src = json.loads(SHARED_ATTACK.read_text())
    names = {t["name"]: t["shortname"] for t in src["tactics"]}
    expected = {
        t["id"]: (t["name"], tuple(names[n] for n in t["tactics"]), t["parent_id"], t["url"])
        for t in src["techniques"]
    }
    ours = {
        t.id: (t.name, t.tactics, t.parent, t.url) for t in catalogue().techniques if t.containers
    }
    assert ours == expected


def test_every_technique_is_well_formed() -> None:
    """Ids look like T1234(.567), URLs follow the id, sub-techniques have an existing parent."""
    cat = catalogue()
    for t in cat.techniques:
        assert re.fullmatch(r"T\d{4}(\.\d{3})?", t.id), t.id
        assert t.url == "https://attack.mitre.org/techniques/" + t.id.replace(".", "/")
        assert t.tactics and t.name
        if "." in t.id:
            assert t.parent == t.id.split(".")[0]
            assert cat.technique(t.parent).id == t.parent
        else:
            assert t.parent is None


def test_techniques_outside_containers_are_there_for_microsoft_mappings() -> None:
    """Each non-Containers technique is mapped by the Microsoft matrix (or parents one that is)."""
    cat = catalogue()
    mapped = {a for m in cat.mtmk_techniques for a in m.attack}
    for t in cat.techniques:
        if not t.containers:
            children = {s.id for s in cat.techniques if s.parent == t.id}
            assert t.id in mapped or children & mapped, t.id


def test_notice_reproduces_mitre_copyright_and_licences() -> None:
    """mitre/data/NOTICE carries MITRE's copyright designation, its licence and CC BY 4.0."""
    notice = (DATA / "NOTICE").read_text()
    assert "© 2025 The MITRE Corporation" in notice or "(c) 2025 The MITRE Corporation" in notice
    assert "reproduced and distributed with the permission of" in notice
    assert "royalty-free license to use ATT&CK" in notice
    assert "421deacb77191b38bdd1bf63268954e93da91365" in notice
    assert "CC BY 4.0" in notice and "b885d18bd4236286b59b735c5e18f2902823d2c2" in notice
    data = json.loads((DATA / "attack-containers.json").read_text())
    assert data["attack_version"] == "18.1" and "MITRE Corporation" in data["attribution"]
    assert "CC BY 4.0" in json.loads((DATA / "mtmk.json").read_text())["license"]


def test_mitre_imports_nothing_internal() -> None:
    """The mitre package imports no other Klaxon package (architecture rule)."""
    internal = {"schemas", "detections", "pipeline", "replay", "klaxon"}
    for path in Path(mitre.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & internal, f"{path.name} imports {roots & internal}"


def test_inconsistent_catalogue_data_is_rejected() -> None:
    """A technique with an unknown tactic or parent, or malformed data, raises CatalogueError."""
    tac = Tactic("execution", "Execution", "TA0002")
    with pytest.raises(CatalogueError, match="unknown tactic 'nope'"):
        Catalogue("18.1", [tac], [Technique("T1609", "X", ("nope",), "u")])
    with pytest.raises(CatalogueError, match="unknown parent T1059"):
        Catalogue("18.1", [tac], [Technique("T1059.013", "X", ("execution",), "u", "T1059")])
    with pytest.raises(CatalogueError, match="malformed"):
        Catalogue.from_json({"attack_version": "18.1", "tactics": [{"id": "TA0002"}]})


# --- look-ups -------------------------------------------------------------------------------


def test_technique_lookup_is_case_insensitive() -> None:
    """technique() finds techniques and sub-techniques whatever the case."""
    assert technique("t1611") is technique("T1611")
    sub = technique("T1053.007")
    assert (sub.name, sub.parent, sub.is_subtechnique) == (
        "Container Orchestration Job",
        "T1053",
        True,
    )
    assert set(sub.tactics) == {"execution", "persistence", "privilege-escalation"}


def test_unknown_technique_raises_a_mitre_lookup_error() -> None:
    """An id outside the catalogue raises UnknownIdError, a MitreError and a LookupError."""
    with pytest.raises(UnknownIdError, match="T1003") as info:
        technique("T1003")
    assert isinstance(info.value, MitreError) and isinstance(info.value, LookupError)


def test_tactic_lookup_accepts_shortname_id_and_legacy_spelling() -> None:
    """tactic() takes a shortname, a TA id, or the underscore spelling of old Sigma rules."""
    assert tactic("privilege-escalation").id == "TA0004"
    assert tactic("TA0004").shortname == "privilege-escalation"
    assert tactic("privilege_escalation").name == "Privilege Escalation"
    with pytest.raises(UnknownIdError):
        tactic("exfiltration")  # an Enterprise tactic we do not carry


def test_enterprise_techniques_mapped_by_microsoft_can_be_looked_up() -> None:
    """Techniques outside Containers that the Microsoft matrix uses are present, with names."""
    assert technique("T1078.004").name == "Cloud Accounts"
    assert technique("T1552.005").name == "Cloud Instance Metadata API"
    assert technique("T1090").tactics == ("command-and-control",)
    assert not technique("T1557").containers


# --- tags -----------------------------------------------------------------------------------


def test_parse_tag_returns_techniques_and_tactics() -> None:
    """attack.t<id> gives a Technique, attack.<shortname> a Tactic."""
    assert parse_tag("attack.t1611") == technique("T1611")
    assert parse_tag("attack.t1552.007").name == "Container API"
    assert parse_tag("attack.credential-access") == tactic("credential-access")
    assert isinstance(parse_tag("attack.TA0007"), Tactic)


@pytest.mark.parametrize(
    "tag", ["cve.2021-25741", "attack", "attack.t16", "attack.t1611.1", "attack.g0139", "attack.?"]
)
def test_parse_tag_rejects_tags_that_name_no_technique_or_tactic(tag: str) -> None:
    """Other namespaces, malformed ids and group/software tags raise TagError."""
    with pytest.raises(TagError):
        parse_tag(tag)


def test_valid_tags_have_no_problems() -> None:
    """Known tactic + technique of that tactic, other namespaces and group tags pass."""
    tags = ["attack.privilege-escalation", "attack.t1611", "attack.g0139", "cve.2019-5736"]
    assert validate_tags(tags) == []
    assert validate_tags([]) == []


def test_unknown_technique_and_tactic_are_reported() -> None:
    """Unknown ids and tactics each give one problem naming the tag."""
    problems = validate_tags(["attack.t9999", "attack.exfil", "attack.t1611"])
    assert len(problems) == 2
    assert problems[0].startswith("attack.t9999: unknown ATT&CK technique")
    assert problems[1].startswith("attack.exfil: unknown ATT&CK tactic")


def test_technique_outside_the_listed_tactics_is_linted() -> None:
    """A technique none of whose tactics is listed is flagged, naming both sides."""
    (problem,) = validate_tags(["attack.discovery", "attack.t1611"])
    assert "Escape to Host is a privilege-escalation technique" in problem
    assert "discovery" in problem
    # One matching tactic among several is enough, and no tactic tags means nothing to check.
    assert validate_tags(["attack.discovery", "attack.execution", "attack.t1609"]) == []
    assert validate_tags(["attack.t1611"]) == []


def test_non_canonical_spellings_are_reported_with_the_fix() -> None:
    """Upper-case ids and underscore tactics are understood but flagged with the canonical tag."""
    problems = validate_tags(["attack.privilege_escalation", "attack.T1611"])
    assert problems == [
        "attack.privilege_escalation: write it attack.privilege-escalation"
        " (lower case, hyphenated)",
        "attack.T1611: write it attack.t1611 (lower case, hyphenated)",
    ]


# --- Microsoft Threat Matrix for Kubernetes -------------------------------------------------


def test_mtmk_lookup_gives_name_tactics_and_attack_mapping() -> None:
    """mtmk() returns the Microsoft technique with its tactics and ATT&CK ids."""
    m = mtmk("ms-ta9013")
    assert m.name == "Writable hostPath mount"
    assert m.tactics == ("persistence", "privilege-escalation", "lateral-movement")
    assert m.attack == ("T1611",)
    assert mtmk("MS-TA9040").attack == ("T1498", "T1499")


def test_mtmk_has_the_40_published_techniques() -> None:
    """Ids run MS-TA9001..MS-TA9041 without MS-TA9032, as in the pinned snapshot."""
    ids = [m.id for m in catalogue().mtmk_techniques]
    assert ids == [f"MS-TA{n}" for n in range(9001, 9042) if n != 9032]
    with pytest.raises(UnknownIdError):
        mtmk("MS-TA9032")


def test_every_mtmk_mapping_points_into_the_catalogue() -> None:
    """Each ATT&CK id a Microsoft technique maps to exists, and each tactic is known."""
    cat = catalogue()
    for m in cat.mtmk_techniques:
        for a in m.attack:
            assert cat.technique(a).id == a
        for s in m.tactics:
            assert cat.tactic(s).shortname == s


def test_validate_mtmk_reports_malformed_and_unknown_ids() -> None:
    """klaxon.mtmk ids must be existing MS-TA9xxx ids."""
    assert validate_mtmk(["MS-TA9018", "ms-ta9006"]) == []
    problems = validate_mtmk(["MS-TA9099", "T1611"])
    assert problems[0].startswith("MS-TA9099: unknown Microsoft Threat Matrix technique")
    assert problems[1].startswith("T1611: malformed")
