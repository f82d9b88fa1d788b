"""The dashboard's model of the station, fed with provisioning events."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rpiboot.provision.web.app import json_body
from rpiboot.provision.web.state import MAX_TEXT, StationState

HOSTILE = '<img src=x onerror="alert(1)">\u202e\x1b[2J\ud800'


def _feed(state: StationState, *events: dict) -> None:
    for item in events:
        state.apply(item)


def test_a_board_through_its_steps() -> None:
    state = StationState("line1-a")
    _feed(state,
          {"event": "start", "station": "line1-a", "profile": "cm4-prod"},
          {"event": "board_arrived", "port": "1-1.2", "chip": "BCM2711"},
          {"event": "step_started", "port": "1-1.2", "step": "write", "serial": "10000000abcd"},
          {"event": "step_progress", "port": "1-1.2", "step": "write", "bytes": 50,
           "total": 200, "rate": 25e6, "eta": 6.0})
    (card,) = state.snapshot()["ports"]
    assert (card["port"], card["chip"], card["serial"], card["step"]) == (
        "1-1.2", "BCM2711", "10000000abcd", "write")
    assert (card["bytes"], card["total"], card["rate"], card["eta"]) == (50, 200, 25e6, 6.0)
    assert card["state"] == "active"
    state.apply({"event": "board_done", "port": "1-1.2", "serial": "10000000abcd",
                 "bytes_written": 200, "verified": True, "unit": 7,
                 "board": {"model": "Compute Module 4", "revision": "1.1", "memory_mb": 4096}})
    snapshot = state.snapshot()
    (card,) = snapshot["ports"]
    assert (card["state"], card["unit"], card["bytes"], card["eta"]) == ("ok", 7, 200, None)
    assert card["board"] == "Compute Module 4 1.1 4 GB"
    assert snapshot["run"] == {"ok": 1, "failed": 0, "skipped": 0, "active": 0, "failures": {}}
    assert snapshot["profile"] == "cm4-prod"


def test_failures_are_counted_once_by_code() -> None:
    state = StationState()
    for port in ("1-1", "1-2", "1-3"):
        state.apply({"event": "board_arrived", "port": port, "chip": "BCM2712"})
    failed = {"event": "board_failed", "port": "1-1", "step": "verify",
              "code": "verify_mismatch", "message": "mismatch at byte 4096", "exit_code": 5}
    _feed(state, failed, failed,
          {"event": "board_failed", "port": "1-2", "step": "write", "code": "device_gone",
           "message": "the disk vanished", "exit_code": 5})
    run = state.snapshot()["run"]
    assert (run["failed"], run["active"]) == (2, 1)
    assert run["failures"] == {"verify_mismatch": 1, "device_gone": 1}
    card = state.snapshot()["ports"][0]
    assert (card["code"], card["message"], card["step"]) == (
        "verify_mismatch", "mismatch at byte 4096", "verify")


def test_ports_sort_by_number_and_a_new_board_replaces_the_old_card() -> None:
    state = StationState()
    for port in ("1-1.10", "1-1.9", "2-1"):
        state.apply({"event": "board_arrived", "port": port, "chip": "BCM2711"})
    assert [c["port"] for c in state.snapshot()["ports"]] == ["1-1.9", "1-1.10", "2-1"]
    state.apply({"event": "board_failed", "port": "1-1.9", "code": "x", "message": "m"})
    state.apply({"event": "board_arrived", "port": "1-1.9", "chip": "BCM2712"})
    card = state.snapshot()["ports"][0]
    assert (card["state"], card["chip"], card["code"]) == ("active", "BCM2712", "")


def test_hostile_strings_stay_text_and_are_bounded() -> None:
    state = StationState()
    _feed(state, {"event": "board_arrived", "port": "1-1", "chip": HOSTILE},
          {"event": "board_failed", "port": "1-1", "serial": HOSTILE * 100,
           "code": HOSTILE, "message": HOSTILE})
    card = state.snapshot()["ports"][0]
    assert card["chip"] == HOSTILE and len(card["serial"]) == MAX_TEXT
    decoded = json.loads(json_body(state.snapshot()))
    assert decoded["ports"][0]["message"] == HOSTILE
    assert b"<img" in json_body(state.snapshot())  # data, escaped by the page, not here


def test_version_changes_wake_waiters() -> None:
    state = StationState()
    version = state.version
    state.apply({"event": "board_arrived", "port": "1-1", "chip": "BCM2711"})
    assert state.wait_for_change(version, timeout=0.01) == version + 1
    state.apply({"event": "no_port_event"})
    state.apply({"not": "an event"})
    assert state.version == version + 1


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                    st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
_kinds = st.sampled_from(["start", "board_arrived", "step_started", "step_progress",
                          "board_done", "board_failed", "board_skipped", "summary", "other"])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.fixed_dictionaries(
    {"event": _kinds, "port": st.one_of(st.none(), st.sampled_from(["1-1", "1-2"]), _values)},
    optional={key: _values for key in ("chip", "serial", "step", "bytes", "total", "rate", "eta",
                                       "code", "message", "unit", "board", "time")}),
    max_size=12))
def test_any_event_sequence_keeps_a_valid_snapshot(events: list[dict]) -> None:
    state = StationState()
    for item in events:
        state.apply(item)
    snapshot = state.snapshot()
    assert json.loads(json_body(snapshot))["version"] == state.version
    run = snapshot["run"]
    finished = sum(card["state"] != "active" for card in snapshot["ports"])
    assert run["ok"] + run["failed"] + run["skipped"] >= finished
