"""First-boot settings: validation, the cloud-init and firstrun files, password hashing."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from rpiboot.provision.customise import edit_cmdline
from rpiboot.provision.first_boot_files import (cloud_init_files, cmdline_tokens, firstrun_script,
                                                wifi_psk, yaml_str)
from rpiboot.provision.first_boot_settings import CustomiseError, Settings, validate_settings
from rpiboot.provision.password_hash import hash_password

yaml = pytest.importorskip("yaml")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOQ3b3Vb0l9rQhpxT0c7QbhpLk2l4lT0sT5iRr8t0wq operator@line1"
HASH = hash_password("raspberry", salt="k2Xq9fPz")


def full(**overrides: object) -> Settings:
    values: dict = dict(hostname="cm4-100000001", user="operator", password_hash=HASH,
                        ssh_authorized_keys=[KEY], wifi_ssid="Line 1", wifi_password="s3cret-pass",
                        wifi_country="gb", keyboard_layout="gb", locale="en_GB.UTF-8",
                        timezone="Europe/London")
    values.update(overrides)
    return validate_settings(Settings(**values))


def test_cloud_init_user_data_carries_every_setting() -> None:
    files = cloud_init_files(full(), "rpiboot-abc")
    assert files["user-data"].startswith(b"#cloud-config\n")
    data = yaml.safe_load(files["user-data"])
    assert data["hostname"] == "cm4-100000001" and data["manage_etc_hosts"] is True
    assert data["timezone"] == "Europe/London" and data["locale"] == "en_GB.UTF-8"
    assert data["keyboard"] == {"model": "pc105", "layout": "gb"}
    assert data["user"] == {"name": "operator", "shell": "/bin/bash", "lock_passwd": False,
                            "passwd": HASH, "ssh_authorized_keys": [KEY], "sudo": None}
    assert data["ssh_pwauth"] is False
    assert ["systemctl", "enable", "--now", "ssh"] in data["runcmd"]
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "rpiboot-abc"}


def test_network_config_uses_the_psk_not_the_passphrase() -> None:
    files = cloud_init_files(full(wifi_hidden=True), "i")
    assert b"s3cret-pass" not in files["network-config"]
    net = yaml.safe_load(files["network-config"])["network"]
    assert net["version"] == 2 and net["ethernets"]["eth0"]["dhcp4"] is True
    wlan = net["wifis"]["wlan0"]
    assert wlan["regulatory-domain"] == "GB"
    assert wlan["access-points"] == {"Line 1": {"hidden": True, "password": wifi_psk(full())}}


def test_open_network_and_no_wifi() -> None:
    net = yaml.safe_load(cloud_init_files(full(wifi_password=None), "i")["network-config"])
    assert net["network"]["wifis"]["wlan0"]["access-points"]["Line 1"] == {
        "auth": {"key-management": "none"}}
    assert "network-config" not in cloud_init_files(full(wifi_ssid=None, wifi_password=None), "i")


def test_wpa_psk_matches_the_ieee_802_11i_test_vector() -> None:
    s = Settings(wifi_ssid="IEEE", wifi_password="password")
    assert wifi_psk(s) == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    raw = "AB" * 32
    assert wifi_psk(Settings(wifi_ssid="x", wifi_password=raw)) == raw.lower()


def test_key_only_user_is_password_locked() -> None:
    data = yaml.safe_load(cloud_init_files(full(password_hash=None), "i")["user-data"])
    assert data["user"]["lock_passwd"] is True and "passwd" not in data["user"]


def test_password_login_over_ssh_when_asked() -> None:
    data = yaml.safe_load(cloud_init_files(full(ssh_password_auth=True), "i")["user-data"])
    assert data["ssh_pwauth"] is True
    assert "enable_ssh -p" in firstrun_script(full(ssh_password_auth=True)).decode()


def test_firstrun_script_is_valid_shell_and_cleans_up() -> None:
    script = firstrun_script(full()).decode()
    assert script.startswith("#!/bin/sh\n")
    for shell in ("sh", "bash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n"], input=script, text=True, check=True)
    assert "set_hostname cm4-100000001" in script
    assert f"enable_ssh -k {shlex.quote(KEY)}" in script
    assert f"userconf operator {shlex.quote(HASH)}" in script
    assert f"set_wlan 'Line 1' {wifi_psk(full())} GB" in script
    assert "s3cret-pass" not in script
    assert 'rm -f "$dir/firstrun.sh"' in script and script.endswith("exit 0\n")


def test_cmdline_tokens_and_edit() -> None:
    s = full()
    cloud = cmdline_tokens(s, "cloud-init", "rpiboot-1")
    assert cloud == ["cfg80211.ieee80211_regdom=GB", "ds=nocloud;i=rpiboot-1"]
    old = b"console=tty1 root=PARTUUID=1-02 rootwait cfg80211.ieee80211_regdom=US\n"
    once = edit_cmdline(old, cloud)
    assert once == b"console=tty1 root=PARTUUID=1-02 rootwait " \
                   b"cfg80211.ieee80211_regdom=GB ds=nocloud;i=rpiboot-1\n"
    firstrun = cmdline_tokens(s, "firstrun", "x")
    again = edit_cmdline(once, firstrun)
    assert again == (b"console=tty1 root=PARTUUID=1-02 rootwait cfg80211.ieee80211_regdom=GB "
                     b"systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
                     b"systemd.unit=kernel-command-line.target\n")
    assert edit_cmdline(again, firstrun) == again
    assert edit_cmdline(b"a b", ["c"]) == b"a b c"


@pytest.mark.parametrize("field,value,message", [
    ("hostname", "-cm4", "hostname"), ("hostname", "a" * 64, "hostname"),
    ("hostname", "cm4.local", "hostname"), ("hostname", "cm4\nx", "hostname"),
    ("hostname", "", "must not be empty"), ("user", "Root", "user name"),
    ("user", "root", "system account"), ("user", "op$(reboot)", "user name"),
    ("password_hash", "raspberry", "crypt"), ("password_hash", "$6$salt$ab'c\ndef", "crypt"),
    ("ssh_authorized_keys", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\nrm -rf /"], "control"),
    ("ssh_authorized_keys", ["not a key"], "OpenSSH"), ("ssh_authorized_keys", "ssh-rsa", "list"),
    ("wifi_ssid", "x" * 33, "wifi_ssid"), ("wifi_ssid", "a\nb", "wifi_ssid"),
    ("wifi_password", "short", "8-63"), ("wifi_password", "pässwörd12", "8-63"),
    ("wifi_country", "GBR", "country"), ("timezone", "../../etc/passwd", "timezone"),
    ("timezone", "Europe/London; reboot", "timezone"), ("keyboard_layout", "gb'", "keyboard"),
    ("locale", "en_GB.UTF-8\n", "locale"), ("init", "systemd", "init"),
    ("wifi_hidden", "yes", "true or false"),
])
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(CustomiseError, match=message) as info:
        full(**{field: value})
    assert info.value.code == "customise_invalid"


def test_a_timezone_typo_is_refused_with_the_name_it_meant() -> None:
    """'Europe/Londn' passes the shape check; the board would silently stay on UTC."""
    import zoneinfo
    if "Europe/London" not in zoneinfo.available_timezones():
        pytest.skip("this host has no tz database to check against")
    with pytest.raises(CustomiseError, match="unknown timezone.*did you mean 'Europe/London'"):
        full(timezone="Europe/Londn")
    assert full(timezone="Etc/UTC").timezone == "Etc/UTC"


def test_combinations_that_make_no_sense_are_refused() -> None:
    for overrides, message in [
            (dict(user=None), "need a user name"),
            (dict(password_hash=None, ssh_authorized_keys=[]), "needs a password_hash or SSH keys"),
            (dict(password_hash=None, ssh_password_auth=True), "ssh_password_auth needs"),
            (dict(wifi_ssid=None), "without wifi_ssid")]:
        with pytest.raises(CustomiseError, match=message):
            full(**overrides)


def test_sha512_crypt_matches_the_specification_vectors() -> None:
    assert hash_password("Hello world!", salt="saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEO"
        "faS35inz1")
    assert hash_password("Hello world!", salt="saltstringsaltstring", rounds=10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOu"
        "ZeHBy/YTBmSK6H9qs/y3RnOaw5v.")
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("$6$") and len(first.split("$")[2]) == 16


def test_sha512_crypt_agrees_with_openssl() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    for password in ("raspberry", "pässwörd with spaces", "x" * 100):
        expected = subprocess.run(["openssl", "passwd", "-6", "-salt", "Ab1./xyz", password],
                                  capture_output=True, text=True, check=True).stdout.strip()
        assert hash_password(password, salt="Ab1./xyz") == expected


hostile = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(value=hostile)
def test_yaml_str_round_trips_any_text(value: str) -> None:
    assert yaml.safe_load(f"key: {yaml_str(value)}\n") == {"key": value}


printable_ssid = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                         min_size=1, max_size=12)


@hyp_settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(ssid=printable_ssid, comment=printable_ssid)
def test_hostile_ssid_and_key_comment_stay_data(ssid: str, comment: str) -> None:
    if len(ssid.encode("utf-8", "surrogatepass")) > 32:
        ssid = ssid[:8]
    comment = comment.strip() or "c"              # a key line's ends are whitespace-stripped
    s = full(wifi_ssid=ssid, ssh_authorized_keys=[f"{KEY.rsplit(' ', 1)[0]} {comment}"])
    files = cloud_init_files(s, "i")
    data = yaml.safe_load(files["user-data"])
    assert data["user"]["ssh_authorized_keys"] == s.ssh_authorized_keys
    net = yaml.safe_load(files["network-config"])
    assert list(net["network"]["wifis"]["wlan0"]["access-points"]) == [ssid]
    script = firstrun_script(s).decode()
    wlan = next(line for line in script.splitlines() if " set_wlan " in line)
    assert shlex.split(wlan)[2] == ssid
    ssh = next(line for line in script.splitlines() if " enable_ssh " in line)
    assert shlex.split(ssh)[3] == s.ssh_authorized_keys[0]
    if shutil.which("sh"):
        subprocess.run(["sh", "-n"], input=script, text=True, check=True)


def test_docs_describe_every_setting() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "provision-customise.md"
    text = doc.read_text()
    for name in Settings.__dataclass_fields__:
        assert f"`{name}`" in text, name
