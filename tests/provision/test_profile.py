"""Profiles: keys, types, files, templates and the profile id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rpiboot.provision.profile import ProfileError, load_profile


def make(tmp: Path, text: str, name: str = "p.toml") -> Path:
    (tmp / "os.img").write_bytes(b"\0" * 4096)
    path = tmp / name
    path.write_text(text)
    return path


OS = '[os]\nimage = "os.img"\n'


def error_of(tmp: Path, text: str) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(make(tmp, text))
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_relative_paths_are_relative_to_the_profile_file(tmp_path, monkeypatch):
    sub = tmp_path / "line"
    sub.mkdir()
    path = make(sub, OS + '[ledger]\npath = "ledger.sqlite"\n')
    monkeypatch.chdir(tmp_path)
    profile = load_profile(Path("line") / "p.toml")
    assert profile.os.image == sub / "os.img"
    assert profile.ledger == str(sub / "ledger.sqlite")
    assert profile.name == "p" and profile.os.verify is True
    assert path.exists()


@pytest.mark.parametrize("text, expected", [
    (OS + "verfy = true\n", "unknown key '[os] verfy'; did you mean 'verify'?"),
    (OS + "[customize]\nhostname = 'x'\n", "unknown section 'customize'; did you mean 'customise'?"),
    (OS + "[customise]\npassword = 'secret'\n", "password_hash"),
    (OS + "[customise]\nhostname = 'cm4-{seriall}'\n", "unknown placeholder {seriall}; did you mean {serial}?"),
    (OS + "[customise]\nhostname = 'cm4-{unit:zz}'\n", "cannot be filled"),
    (OS + "[customise]\nhostname = 'cm4-{serial!r}'\n", "'!r' is not allowed"),
    (OS + "[customise]\nhostname = 'cm4-{'\n", "literal braces"),
    (OS + "[customise]\nhostname = '{pool.a-b}'\n", "pool column"),
    (OS + "[customise]\ninit = 'systemd'\n", "init must be one of cloud-init, firstrun"),
    (OS + "[customise]\nssh_authorized_keys = 'ssh-ed25519 AAA'\n", "must be a list of strings"),
    ('[os]\nimage = 3\n', "[os] image must be a non-empty path, not an integer (3)"),
    ('[os]\nimage = "os.img"\nverify = "yes"\n', "[os] verify must be a boolean, not a string ('yes')"),
    ('[os]\nimage = "missing.img"\n', "missing.img' does not exist"),
    ('[os]\nimage = "."\n', "is not a regular file"),
    ('name = "x"\n', "needs an [os] section"),
    ('[os]\n', "[os] needs 'image'"),
    (OS + '[eeprom]\nrecovery = "."\n', "[eeprom] needs 'boot_conf'"),
    (OS + '[ledger]\npath = "a"\nurl = "postgresql://x"\n', "either path or url"),
    ('os = 1\n', "'os' must be a section"),
    ('[os\n', "not valid TOML"),
])
def test_bad_profiles_are_one_line_errors_naming_the_key(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_missing_and_unreadable_profiles(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path)
    path = make(tmp_path, OS)
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[os]")
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(tmp_path / "bin.toml")
    if os.geteuid() != 0:
        os.chmod(tmp_path / "os.img", 0)
        with pytest.raises(ProfileError, match="not readable"):
            load_profile(path)


def test_templates_render_with_board_values(tmp_path):
    profile = load_profile(make(tmp_path, OS + '[customise]\nhostname = "line1-{unit:04d}"\n'
                                "ssh_authorized_keys = ['{pool.key} {serial}']\n"
                                'timezone = "Europe/London"\nssh_password_auth = false\n'))
    assert profile.template_fields == {"unit", "pool.key", "serial"}
    assert profile.pool_columns == {"key"}
    values = profile.settings_values({"unit": 7, "pool.key": "ssh-ed25519 AAA", "serial": "ab"})
    assert values == {"hostname": "line1-0007", "ssh_authorized_keys": ["ssh-ed25519 AAA ab"],
                      "timezone": "Europe/London", "ssh_password_auth": False}


def test_profile_id_follows_settings_and_file_contents_not_location(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    first = load_profile(make(one, OS + '[ledger]\npath = "a.sqlite"\n'))
    second = load_profile(make(two, OS + '[ledger]\npath = "b.sqlite"\n'))
    assert first.profile_id == second.profile_id  # the ledger's place is not the board's content
    (two / "os.img").write_bytes(b"\1" * 4096)
    assert load_profile(two / "p.toml").profile_id != first.profile_id
    changed = load_profile(make(one, OS + '[customise]\nhostname = "a"\n', "q.toml"))
    assert changed.profile_id != first.profile_id
