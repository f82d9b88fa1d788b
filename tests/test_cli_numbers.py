"""Every numeric option is finite and in range; a bad one is a one-line usage error (exit 2)."""

from __future__ import annotations

import pytest

from rpiboot import cli


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli.parse_options(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rpiboot: error: ")
    return err


@pytest.mark.parametrize("argv, expected", [
    (["--timeout", "nan"], "--timeout must be a finite number"),
    (["--run-timeout", "nan"], "--run-timeout must be a finite number"),
    (["--timeout", "inf"], "--timeout must be a finite number"),
    (["--timeout", "-1"], "--timeout must be more than 0, not -1"),
    (["--timeout=-1"], "--timeout must be more than 0"),
    (["--timeout", "0"], "--timeout must be more than 0"),
    (["--follow", "-5"], "--follow must be more than 0, not -5"),
    (["--follow", "nan"], "--follow must be a finite number"),
    (["--reenumerate-timeout", "0"], "--reenumerate-timeout must be more than 0"),
    (["--stall-timeout", "nan"], "--stall-timeout must be a finite number"),
    (["--open-delay", "-0.5"], "--open-delay must be at least 0"),
    (["--retry-delay", "inf"], "--retry-delay must be a finite number"),
    (["--close-delay", "1e9"], "--close-delay must be at most 3600"),
    (["--timeout", "1e300"], "--timeout must be at most"),
    (["-m", "0"], "-m must be at least 1"),
    (["-m", "-5"], "-m must be at least 1, not -5"),
    (["--retries", "0"], "--retries must be at least 1"),
    (["--chunk-size", "100"], "--chunk-size must be at least 512"),
    (["-99"], "the port number"),
    (["--port", "-1"], "the port number"),
])
def test_bad_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                      expected: str) -> None:
    assert expected in _usage_error(capsys, argv)


def test_follow_minus_five_is_not_read_as_port_five(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--follow" in _usage_error(capsys, ["--follow", "-5"])


def test_upstream_port_flags_still_work() -> None:
    args, options = cli.parse_options(["-5", "--timeout", "3", "--follow"])
    assert options.port_number == 5 and options.timeout == 3.0 and options.follow == 60.0
    args, options = cli.parse_options(["--follow", "2.5", "-0"])
    assert options.follow == 2.5 and options.port_number == 0


@pytest.mark.parametrize("flag", [["-p", "1-2"], ["-i", "abc"], ["--follow", "1"], ["-5"],
                                  ["-l"], ["-s"], ["--libusb", "system"]])
def test_demo_refuses_flags_it_cannot_honour(capsys: pytest.CaptureFixture[str],
                                             flag: list[str]) -> None:
    assert "--demo" in _usage_error(capsys, ["--demo", *flag])


@pytest.mark.parametrize("argv, expected", [
    (["--chunk-size", "99999999999"], "--chunk-size must be at most 16777216, not 99999999999"),
    (["-m", "123456789"], "-m must be at most 60000000, not 123456789"),
    (["--timeout", "1e300"], "--timeout must be at most 2592000, not 1e+300"),
])
def test_range_errors_show_the_exact_bound(capsys: pytest.CaptureFixture[str], argv: list[str],
                                           expected: str) -> None:
    assert expected in _usage_error(capsys, argv)
