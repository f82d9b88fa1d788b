"""The --json event stream: every event of full runs validates against the documented schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rpiboot import cli
from rpiboot.demo import demo_pis
from rpiboot.errors import ExitCode
from rpiboot.event_schema import (COMMON, DEVICE_SUMMARY, ERROR_CODES, EVENT_SCHEMA,
                                  validate)
from rpiboot.simulator import FinalStage, RomStage, ServerStage, typical_pi
from rpiboot.simulator.script import load

from operator_support import run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events.md"


def _check_all(events) -> None:
    problems = []
    for item in events:
        # what --json prints: the same dict, through a JSON round trip
        problems += validate(json.loads(json.dumps(item.to_dict())))
    assert problems == []


def test_every_event_of_the_demo_run_validates() -> None:
    result, events = run(demo_pis(), metadata=True)
    assert result.exit_code == ExitCode.OK
    kinds = set(events.kinds())
    assert {"start", "waiting", "device_arrived", "stage_started", "file_loaded",
            "second_stage_sent", "file_requested", "file_served", "metadata", "metadata_json",
            "stage_done", "device_done", "summary"} <= kinds
    _check_all(events.events)


def test_failures_progress_and_follow_validate(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr("rpiboot.link.PROGRESS_INTERVAL", 0.0)
    followed = typical_pi("2711", (1,), serial="aa")
    followed.stages.append(FinalStage())
    refused = typical_pi("2712", (2,))
    refused.stages[0] = RomStage(return_code=7)
    missing = rpiboot_pi_missing_file()
    stalled = typical_pi("2835", (4,))
    stalled.stages[1] = ServerStage(load("start.elf"), stall_at_request=1)
    result, events = run([followed, refused, missing, stalled], follow=1.0,
                         metadata=True, metadata_dir=tmp_path, loop=True, timeout=0.5)
    kinds = set(events.kinds())
    assert {"file_progress", "device_failed", "device_followed", "file_missing",
            "metadata_written", "summary"} <= kinds
    _check_all(events.events)
    codes = {item.port: item.data["code"] for item in events.of("device_failed")}
    # 1-3 has no final stage: --follow times out for it
    assert codes == {"1-2": "refused", "1-3": "follow_timeout", "1-4": "stalled"}
    assert result.exit_code == ExitCode.REFUSED


def rpiboot_pi_missing_file():
    pi = typical_pi("2711", (3,), files=("config.txt", "nothere.txt"),
                    meta={"MAC_ADDR": "d8:3a:dd:05:ee:78"})
    return pi


def test_cli_json_lines_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--demo", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines
    problems = [problem for line in lines for problem in validate(json.loads(line))]
    assert problems == []
    assert json.loads(lines[-1])["event"] == "summary"


def test_cli_error_event_has_stable_code(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--json", "-d", str(tmp_path / "absent")])
    assert code == ExitCode.BOOT_DIRECTORY
    out, err = capsys.readouterr()
    item = json.loads(out.splitlines()[-1])
    assert validate(item) == []
    assert item["event"] == "error" and item["code"] == "boot_directory"
    assert item["exit_code"] == 3
    assert err.startswith("rpiboot: error: ")


def test_list_json_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list", "--json", "--demo"]) == 0
    for line in capsys.readouterr().out.splitlines():
        assert validate(json.loads(line)) == []


def test_schema_rejects_bad_events() -> None:
    assert validate({"event": "nope", "time": 1.0})
    assert validate({"event": "file_served", "time": 1.0, "port": "1-1", "name": "x",
                     "size": "12", "seconds": 0.1})
    assert validate({"event": "file_served", "time": 1.0, "port": "1-1", "name": "x",
                     "size": 12, "seconds": 0.1, "extra": 1})
    assert validate({"event": "device_failed", "time": 1.0, "port": "1-1", "code": "weird",
                     "message": "m", "exit_code": 5})


_TYPE_WORDS = {"str": "string", "int": "integer", "number": "number", "bool": "boolean",
               "list": "array", "dict": "object"}
"""event_schema's type names and the words docs/events.md uses for them."""

_DOCUMENTED_IN = {"device_done": "summary"}
"""Kinds whose fields are in another section's table (device_done: the summary's devices)."""


def _doc_sections() -> dict[str, str]:
    """Heading (its first `name`, or its text) -> the section's text, for ## and ### headings."""
    text = DOCS.read_text()
    sections = {}
    for match in re.finditer(r"^#{2,3} ([^\n]+)\n(.*?)(?=^#{1,3} |\Z)", text, re.M | re.S):
        name = re.match(r"`([^`]+)`", match.group(1))
        sections[name.group(1) if name else match.group(1).strip()] = match.group(2)
    return sections


def _table(section: str) -> dict[str, str]:
    """Field -> type cell of the field tables in one section."""
    return {row.group(1): row.group(2).strip()
            for row in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)}


def _check_type(where: str, cell: str, schema_type: str) -> None:
    word = _TYPE_WORDS[schema_type.rstrip("?")]
    assert re.match(rf"{word}\b", cell), (where, cell, schema_type)
    assert ("or null" in cell) == schema_type.endswith("?"), (where, cell, schema_type)


def test_docs_table_of_each_kind_has_its_fields_and_types() -> None:
    sections = _doc_sections()
    common = _table(sections["Common fields"])
    for name, schema_type in {**COMMON, "port": "str"}.items():
        _check_type(f"common {name}", common[name], schema_type)
    for kind, fields in EVENT_SCHEMA.items():
        assert kind in sections, f"docs/events.md has no section for {kind}"
        table = _table(sections[_DOCUMENTED_IN.get(kind, kind)])
        for name, schema_type in fields.items():
            if name == "port" and name not in table:
                continue  # a common field, checked above
            assert name in table, f"{kind}.{name} is not in its table in docs/events.md"
            _check_type(f"{kind}.{name}", table[name], schema_type)
        extra = set(_table(sections[kind])) - set(fields) - (
            set(DEVICE_SUMMARY) if kind == "summary" else set())
        assert not extra, f"docs/events.md documents {kind} fields the schema lacks: {extra}"


def test_docs_table_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        _check_type("x", "string", "str?")
    with pytest.raises(AssertionError):
        _check_type("x", "integer or null", "int")
    with pytest.raises(AssertionError):
        _check_type("x", "number", "int")
    _check_type("x", "array of strings", "list")
    assert _table("| `a` | string or null | text |\n| b | c |") == {"a": "string or null"}


def test_docs_describe_every_code_and_status() -> None:
    text = DOCS.read_text()
    for code in ERROR_CODES:
        assert f"`{code}`" in text, code
    for status in ExitCode:
        assert f"| {int(status)} " in text, status


def test_error_codes_match_the_error_classes() -> None:
    from rpiboot import errors
    classes = [value for value in vars(errors).values()
               if isinstance(value, type) and issubclass(value, errors.RpibootError)]
    assert {cls.code: int(cls.exit_code) for cls in classes} == ERROR_CODES
