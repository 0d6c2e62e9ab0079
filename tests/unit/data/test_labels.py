"""Tests for tunelab.data.labels: --data.label_map in every spelling, --data.bins by count
and by edges, and the one-line errors naming the flag."""

from __future__ import annotations

import pytest

from tunelab.data.labels import Labeler, bin_labels, fit_edges, parse_bins, parse_label_map
from tunelab.errors import TunelabError


def _rows(*labels) -> list[dict[str, str]]:
    return [{"text": f"t{i}", "label": str(label)} for i, label in enumerate(labels)]


@pytest.mark.parametrize(
    "spelling",
    [
        '{"0": "neg", "1": "pos"}',
        "{0: neg, 1: pos}",  # YAML, as a config file gives it
        "0=neg,1=pos",
        "0=neg, 1=pos",
        {0: "neg", 1: "pos"},
        ["neg", "pos"],
    ],
)
def test_label_map_spellings(spelling):
    assert parse_label_map(spelling) == {"0": "neg", "1": "pos"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("map.json", '{"0": "neg", "1": "pos"}'),
        ("map.yaml", "0: neg\n1: pos\n"),
        ("map.json", '["neg", "pos"]'),
        ("names.txt", "neg\n\npos\n"),
    ],
)
def test_label_map_files(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    assert parse_label_map(str(tmp_path / name)) == {"0": "neg", "1": "pos"}


def test_label_map_renames_merges_and_matches_numbers_by_value():
    label_map = parse_label_map("1=neg,2=neg,4=pos,5=pos")
    labeler = Labeler(label_map="1=neg,2=neg,4=pos,5=pos")
    out = labeler(_rows("1", "2.0", "5", "", "4"))
    assert [e["label"] for e in out] == ["neg", "neg", "pos", "", "pos"]
    assert label_map["4"] == "pos"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("nope.json", r"--data\.label_map file nope\.json does not exist"),
        ("0=neg,1", r"--data\.label_map entry '1' must be RAW=NAME"),
        ("[]", r"--data\.label_map .* is not a mapping"),
    ],
)
def test_label_map_errors(value, words):
    with pytest.raises(TunelabError, match=words):
        parse_label_map(value)


def test_label_not_in_the_map_is_one_line_naming_the_flag():
    labeler = Labeler(label_map="0=neg,1=pos")
    with pytest.raises(TunelabError, match=r"labels 2 are not in --data\.label_map \(keys: 0, 1\)"):
        labeler(_rows(0, 1, 2))


def test_bins_by_count_are_cut_at_quantiles_halfway_between_values():
    rows = _rows(*range(1, 11))  # 1..10
    edges = fit_edges(parse_bins("3"), rows)
    assert edges == [3.5, 7.5]
    labels = [e["label"] for e in bin_labels(rows, edges)]
    assert labels == ["<3.5"] * 3 + ["[3.5, 7.5)"] * 4 + [">=7.5"] * 3


@pytest.mark.parametrize("spelling", ["2.5,4", "[2.5, 4]", [2.5, 4], "2.5, 4"])
def test_bins_by_edges_and_names(spelling):
    bins = parse_bins(spelling, "low,mid,high")
    assert bins.edges == [2.5, 4.0] and bins.count is None
    rows = _rows(1, 2.5, 3.9, 4, 5, "")
    out = [e["label"] for e in bin_labels(rows, fit_edges(bins, rows), bins.names)]
    assert out == ["low", "mid", "mid", "high", "high", ""]


def test_one_edge_is_a_list_a_single_number_a_count():
    assert parse_bins("[3]").edges == [3.0]
    assert parse_bins("3").count == 3
    assert parse_bins(3).count == 3  # a YAML config gives a number


def test_labeler_fits_edges_once_and_reuses_them():
    labeler = Labeler(bins="2")
    train = labeler(_rows(1, 2, 3, 4))
    assert labeler.edges == [2.5]
    test = labeler(_rows(100, 101))  # other data: the training edges, not its own
    assert [e["label"] for e in train] == ["<2.5", "<2.5", ">=2.5", ">=2.5"]
    assert [e["label"] for e in test] == [">=2.5", ">=2.5"]


@pytest.mark.parametrize(
    ("bins", "names", "words"),
    [
        ("1", None, r"--data\.bins 1 is a count of classes and must be a whole number >= 2"),
        ("2.5", None, r"whole number >= 2; for one edge write \[value\]"),
        ("4,2", None, r"--data\.bins edges 4,2 must increase"),
        ("a,b", None, r"--data\.bins edge 'a'"),
        ("2,3", "low,high", r"--data\.bin_names gives 2 names for 3 bins"),
        (None, "low,high", r"--data\.bin_names names the classes of --data\.bins"),
    ],
)
def test_bins_errors(bins, names, words):
    with pytest.raises(TunelabError, match=words):
        parse_bins(bins, names)


def test_bins_need_numbers_and_enough_distinct_values():
    with pytest.raises(TunelabError, match=r"--data\.bins needs numeric labels.*row 2 has 'x'"):
        Labeler(bins="2")(_rows(1, "x"))
    with pytest.raises(TunelabError, match=r"too few distinct values for 3 classes"):
        Labeler(bins="3")(_rows(1, 1, 1, 1, 2))


def test_label_map_and_bins_together_are_refused():
    with pytest.raises(TunelabError, match=r"--data\.label_map .* --data\.bins .*use one"):
        Labeler(label_map="0=a", bins="2")
