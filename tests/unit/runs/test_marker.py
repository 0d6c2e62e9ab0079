"""The run marker: one dataclass, written and read only by runs/marker.py."""

from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.runs.marker import MARKER_FILE, RunMarker, find_marker, read_marker, write_marker


def test_read_marker_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(TunelabError, match="does not exist"):
        read_marker(tmp_path / "missing")
    with pytest.raises(TunelabError, match=f"has no {MARKER_FILE}"):
        read_marker(tmp_path)
    assert find_marker(tmp_path) is None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"task": "x", "labels": 3,'])
def test_a_corrupt_marker_is_a_one_line_error(tmp_path, content):
    (tmp_path / MARKER_FILE).write_text(content)
    with pytest.raises(TunelabError, match="is corrupt") as err:
        read_marker(tmp_path)
    assert "\n" not in str(err.value)


def test_a_minimal_marker_reads_with_defaults(tmp_path):
    (tmp_path / MARKER_FILE).write_text(json.dumps({"task": "classification"}))
    marker = read_marker(tmp_path)
    assert marker.task == "classification" and marker.labels is None
    assert marker.context_length == 512 and not marker.generative


def test_write_then_read_round_trips_and_keeps_unknown_keys(tmp_path):
    marker = RunMarker.from_dict(
        {"task": "causal_lm", "family": "decoder", "max_length": 64, "separator": " => "}
    )
    assert marker.extra == {"separator": " => "}
    write_marker(tmp_path, marker)
    raw = json.loads((tmp_path / MARKER_FILE).read_text())
    assert raw["separator"] == " => " and raw["finished"] and "extra" not in raw
    back = read_marker(tmp_path)
    assert back.generative and back.max_length == 64 and back.extra == {"separator": " => "}
    assert back.finished == raw["finished"]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind
