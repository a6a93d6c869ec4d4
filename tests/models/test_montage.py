from __future__ import annotations

import pytest
from neuroauth.models.montage import DEFAULT_MONTAGE, canonical, parse_montage, resolve_montage


@pytest.mark.parametrize(
    ("name", "key"),
    [("EEG T3", "T7"), ("t4", "T8"), ("EEG T5", "P7"), ("T6-REF", "P8"), ("eeg cz", "CZ"), (" Fp1 ", "FP1")],
)
def test_canonical_names_alias_old_10_20_and_ignore_case_and_prefix(name, key):
    assert canonical(name) == key


def test_resolve_picks_in_montage_order():
    available = ["EEG Fp1", "EEG P4", "EEG Cz", "EEG F8", "EEG T3", "ECG ECG"]
    assert resolve_montage(DEFAULT_MONTAGE, available) == [4, 3, 2, 1]


def test_resolve_reports_missing_channels_by_their_montage_name():
    assert resolve_montage(("T7", "O2", "Cz"), ["EEG T3", "EEG Cz"]) == ["O2"]


def test_parse_montage():
    assert parse_montage("default") == DEFAULT_MONTAGE
    assert len(parse_montage("10-20")) == 19
    assert parse_montage("T7, Cz") == ("T7", "Cz")
    with pytest.raises(ValueError, match="twice"):
        parse_montage("T3,T7")
