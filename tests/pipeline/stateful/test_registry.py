"""`pipeline.stateful.registry`: the registered families' names, settings, kinds and fields
are unique and agree with the settings and options they are switched by."""

from __future__ import annotations

from detections import load_rules
from detections.stateful import suppressed_rule_ids
from pipeline.config import DETECTOR_FAMILIES, Settings
from pipeline.stateful import (
    FAMILIES,
    META_KIND,
    StatefulOptions,
    StatefulProcessor,
    options_from_settings,
    packaged_new_terms,
)


def test_changelog_kinds_are_unique_single_letters_and_not_the_meta_kind() -> None:
    kinds = [k for f in FAMILIES for k in f.kinds]
    assert len(kinds) == len(set(kinds)) == 6
    assert META_KIND not in kinds
    assert all(len(k) == 1 and k != "|" for k in kinds)
    assert sorted(kinds) == ["a", "c", "h", "n", "p", "s"]  # the changelog format: never reuse one


def test_names_settings_and_by_group_fields_are_unique() -> None:
    names = [f.name for f in FAMILIES]
    fields = [f.rekey_field for f in FAMILIES if f.rekey_field is not None]
    assert len(names) == len(set(names))
    assert sorted(fields) == ["heartbeats", "matches"]


def test_each_setting_is_an_accepted_detector_family_and_switches_its_option() -> None:
    """``KLAXON_STATEFUL_DETECTORS`` values (`pipeline.config.DETECTOR_FAMILIES`) are the
    families' settings; each switches the `StatefulOptions` field named like the family."""
    assert {f.setting for f in FAMILIES} == set(DETECTOR_FAMILIES)
    switches = {f.name for f in StatefulOptions.__dataclass_fields__.values() if f.type == "bool"}
    assert {f.name for f in FAMILIES} == switches
    for family in FAMILIES:
        assert family.setting is not None
        opts = options_from_settings(Settings(stateful_detectors=(family.setting,)))
        on = {f.name for f in FAMILIES if getattr(opts, f.name)}
        assert on == {family.name}


def test_suppression_is_the_union_of_the_families_holds() -> None:
    """The processor's suppressed base rules equal `detections.stateful.suppressed_rule_ids`,
    whichever families are switched on."""
    rs = load_rules()
    expected = suppressed_rule_ids(rs, packaged_new_terms(rs))
    for opts in (StatefulOptions(), StatefulOptions(correlations=False, new_terms=False)):
        assert StatefulProcessor(rs, partitions=1, options=opts).suppressed == expected
