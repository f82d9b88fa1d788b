"""Access set-up: the udev rule, its installation (into a temporary path) and platform hints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rpiboot import cli, udev
from rpiboot.errors import PermissionDeniedError, RpibootError, UsageError


def test_rule_matches_every_boot_mode_product() -> None:
    text = udev.udev_rule()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(rules) == 4
    products = set()
    for rule in rules:
        assert 'SUBSYSTEM=="usb"' in rule and 'ATTR{idVendor}=="0a5c"' in rule
        assert 'MODE="0660"' in rule and 'GROUP="plugdev"' in rule and 'TAG+="uaccess"' in rule
        products.add(re.search(r'ATTR\{idProduct\}=="([0-9a-f]{4})"', rule).group(1))
    assert products == {"2763", "2764", "2711", "2712"}
    assert 'GROUP="dialout"' in udev.udev_rule("dialout")


@pytest.mark.parametrize("group", ["", "bad group", 'x",MODE="0666', "a\nb", "1abc"])
def test_rule_refuses_unsafe_group_names(group: str) -> None:
    with pytest.raises(UsageError):
        udev.udev_rule(group)


def test_cli_prints_the_rule(capsys) -> None:
    assert cli.main(["--udev-rule", "--group", "usbboot"]) == 0
    out, err = capsys.readouterr()
    assert out == udev.udev_rule("usbboot")
    assert "sudo tee /etc/udev/rules.d/60-rpiboot.rules" in err


def test_install_writes_and_reloads(tmp_path) -> None:
    path = tmp_path / "rules.d" / "60-rpiboot.rules"
    commands, said, asked = [], [], []
    assert udev.install_udev_rule("plugdev", path=path, confirm=lambda q: asked.append(q) or True,
                                  runner=lambda c: commands.append(list(c)) or 0,
                                  which=lambda name: "/usr/bin/udevadm", platform="linux",
                                  say=said.append)
    assert path.read_text() == udev.udev_rule("plugdev")
    assert commands == [["udevadm", "control", "--reload-rules"],
                        ["udevadm", "trigger", "--subsystem-match=usb",
                         "--attr-match=idVendor=0a5c"]]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert str(path) in asked[0] and "[y/N]" in asked[0]
    assert any("usermod -aG plugdev" in line for line in said)


def test_install_declined_writes_nothing(tmp_path) -> None:
    path = tmp_path / "60-rpiboot.rules"
    said = []
    assert not udev.install_udev_rule(path=path, confirm=lambda q: False, platform="linux",
                                      runner=lambda c: pytest.fail("ran"), say=said.append)
    assert not path.exists() and said == ["Nothing written."]


def test_install_without_udevadm_and_failing_reload(tmp_path) -> None:
    said = []
    udev.install_udev_rule(path=tmp_path / "a.rules", which=lambda n: None, platform="linux",
                           say=said.append)
    assert any("udevadm not found" in line for line in said)
    said.clear()
    udev.install_udev_rule(path=tmp_path / "b.rules", which=lambda n: "/bin/udevadm",
                           runner=lambda c: 1, platform="linux", say=said.append)
    assert any("failed with status 1" in line for line in said)


def test_install_without_permission_is_a_clear_error(tmp_path, monkeypatch) -> None:
    path = tmp_path / "60-rpiboot.rules"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # root ignores file modes, so refuse explicitly
    monkeypatch.setattr(udev.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionDeniedError) as raised:
        udev.install_udev_rule(path=path, platform="linux", say=lambda s: None)
    monkeypatch.undo()
    assert "sudo" in str(raised.value) and "rpiboot --udev-rule | sudo tee" in str(raised.value)
    assert raised.value.exit_code == 7


def test_install_replaces_an_existing_rule_atomically(tmp_path, monkeypatch) -> None:
    path = tmp_path / "60-rpiboot.rules"
    path.write_text("old rule\n")
    replaced = []
    real_replace = udev.os.replace

    def spy(source, destination):
        assert path.read_text() == "old rule\n"  # the old file stays whole until the rename
        assert Path(source).parent == path.parent and Path(source).read_text() == \
            udev.udev_rule("usbboot")
        replaced.append((Path(source).name, Path(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(udev.os, "replace", spy)
    udev.install_udev_rule("usbboot", path=path, which=lambda n: None, platform="linux",
                           say=lambda s: None)
    assert path.read_text() == udev.udev_rule("usbboot")
    assert len(replaced) == 1 and replaced[0][1] == path
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_install_failure_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    path = tmp_path / "60-rpiboot.rules"

    def fail(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(udev.os, "replace", fail)
    with pytest.raises(RpibootError) as raised:
        udev.install_udev_rule(path=path, platform="linux", say=lambda s: None)
    assert "No space left" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_install_off_linux_names_what_is_missing() -> None:
    with pytest.raises(UsageError) as raised:
        udev.install_udev_rule(platform="win32")
    assert "Zadig" in str(raised.value) and "WinUSB" in str(raised.value)


def test_cli_install_needs_yes_without_a_terminal(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert cli.main(["--install-udev-rule"]) == 2
    assert "--yes" in capsys.readouterr().err


def test_cli_install_with_yes(monkeypatch, tmp_path, capsys) -> None:
    path = tmp_path / "60-rpiboot.rules"
    monkeypatch.setattr(udev, "RULES_PATH", path)
    monkeypatch.setattr(udev.install_udev_rule, "__defaults__",
                        (udev.DEFAULT_GROUP,))  # positional defaults untouched
    monkeypatch.setattr(udev.install_udev_rule, "__kwdefaults__",
                        {**udev.install_udev_rule.__kwdefaults__, "path": path,
                         "which": lambda name: None})
    assert cli.main(["--install-udev-rule", "--yes", "--group", "usbboot"]) == 0
    assert 'GROUP="usbboot"' in path.read_text()


@pytest.mark.parametrize("platform, words", [
    ("linux", ["rpiboot --udev-rule"]), ("win32", ["Zadig", "WinUSB", "driver installer"]),
    ("darwin", ["brew install libusb"])])
def test_access_hints(platform: str, words: list[str]) -> None:
    for word in words:
        assert word in udev.access_hint(platform)


@pytest.mark.parametrize("platform, word", [("linux", "libusb-1.0-0"), ("win32", "WinUSB"),
                                            ("darwin", "brew install libusb")])
def test_libusb_hints(platform: str, word: str) -> None:
    assert word in udev.libusb_hint(platform)
