"""Issue 12: the demo's verdict is an event that agrees with the exit status, it says it ran
in-process, and flags it cannot honour are refused (tests/test_cli_numbers.py)."""

from __future__ import annotations

import json

import pytest

import rpiboot.demo
from rpiboot import cli


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_demo_verdict_is_an_event_before_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--demo", "--json"]) == 0
    out, err = capsys.readouterr()
    events = _events(out)
    kinds = [e["event"] for e in events]
    assert kinds[-2:] == ["demo_result", "summary"]
    verdict, summary = events[-2], events[-1]
    assert verdict["ok"] is True and verdict["problems"] == [] and verdict["exit_code"] == 0
    assert "in-process" in verdict["message"] and "libusb" in verdict["message"]
    assert summary["exit_code"] == 0
    assert "in-process" in err


def test_a_failed_demo_check_fails_the_summary_and_the_exit_status(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rpiboot.demo, "_check",
                        lambda pis, directory: ["demo: 1-1: config.txt differs"])
    code = cli.main(["--demo", "--json"])
    out, err = capsys.readouterr()
    events = _events(out)
    verdict, summary = events[-2], events[-1]
    assert code == 5
    assert verdict["event"] == "demo_result" and verdict["ok"] is False
    assert verdict["exit_code"] == summary["exit_code"] == 5
    assert "demo: 1-1: config.txt differs" in err and "FAILED" in err


def test_plain_demo_says_it_ran_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--demo", "--plain"]) == 0
    out, err = capsys.readouterr()
    assert "received exactly the files" in err and "in-process" in err
    assert out.count("Second stage boot server done") == 3
