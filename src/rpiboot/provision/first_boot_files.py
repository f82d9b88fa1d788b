"""Generate the first-boot files Raspberry Pi OS reads from its boot partition.

Two mechanisms, as Raspberry Pi Imager writes them (its source is the
reference for which files, keys and commands; the text here is our own):

* cloud-init (current Raspberry Pi OS, Trixie): ``user-data`` (#cloud-config),
  ``network-config`` (netplan v2) and ``meta-data`` (NoCloud instance id), and
  ``ds=nocloud;i=<id>`` on the kernel command line;
* firstrun (Bookworm and older): ``firstrun.sh``, run once by systemd through
  ``systemd.run=/boot/firstrun.sh`` on the kernel command line, which it then
  removes along with itself.

Every value was checked by :func:`validate_settings`; it is still quoted for
its context (YAML double-quoted scalars, shell single quotes), so no value
can change the structure of a file. A Wi-Fi passphrase is turned into its
WPA PSK (PBKDF2, as wpa_passphrase does) and never written in clear.
"""

from __future__ import annotations

import hashlib
import shlex

from .first_boot_settings import Settings

FIRSTRUN_CMDLINE = ("systemd.run=/boot/firstrun.sh", "systemd.run_success_action=reboot",
                    "systemd.unit=kernel-command-line.target")
IMAGER_CUSTOM = "/usr/lib/raspberrypi-sys-mods/imager_custom"
USERCONF = "/usr/lib/userconf-pi/userconf"


def wifi_psk(settings: Settings) -> str | None:
    """The 64-hex-digit WPA PSK, or None for an open network."""
    password = settings.wifi_password
    if password is None or settings.wifi_ssid is None:
        return None
    if len(password) == 64:
        return password.lower()
    key = hashlib.pbkdf2_hmac("sha1", password.encode("ascii"), settings.wifi_ssid.encode("utf-8"),
                              4096, 32)
    return key.hex()


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar holding exactly ``value``, in plain ASCII."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def cmdline_tokens(settings: Settings, init: str, instance_id: str) -> list[str]:
    tokens = []
    if settings.wifi_country:
        tokens.append(f"cfg80211.ieee80211_regdom={settings.wifi_country}")
    if init == "cloud-init":
        tokens.append(f"ds=nocloud;i={instance_id}")
    else:
        tokens.extend(FIRSTRUN_CMDLINE)
    return tokens


# ---- cloud-init ---------------------------------------------------------------


def cloud_init_files(settings: Settings, instance_id: str) -> dict[str, bytes]:
    files = {"meta-data": f"instance-id: {yaml_str(instance_id)}\n",
             "user-data": _user_data(settings)}
    network = _network_config(settings)
    if network:
        files["network-config"] = network
    return {name: text.encode("ascii") for name, text in files.items()}


def _user_data(s: Settings) -> str:
    lines = ["#cloud-config", "# first-boot settings written by rpiboot-provision",
             "manage_resolv_conf: false"]
    if s.hostname:
        lines += [f"hostname: {yaml_str(s.hostname)}", "manage_etc_hosts: true"]
    if s.timezone:
        lines.append(f"timezone: {yaml_str(s.timezone)}")
    if s.locale:
        lines.append(f"locale: {yaml_str(s.locale)}")
    if s.keyboard_layout:
        lines += ["keyboard:", "  model: pc105", f"  layout: {yaml_str(s.keyboard_layout)}"]
    if s.user:
        lines += _user_section(s)
    if s.ssh_enabled:
        lines.append(f"ssh_pwauth: {'true' if s.ssh_password_auth else 'false'}")
    runcmd = []
    if s.ssh_enabled:
        runcmd.append("  - [systemctl, enable, --now, ssh]")
    if s.wifi_country and not s.wifi_ssid:
        runcmd += ["  - [rfkill, unblock, wifi]",
                   "  - [sh, -c, 'for f in /var/lib/systemd/rfkill/*:wlan; do echo 0 >\"$f\"; done']"]
    if runcmd:
        lines += ["runcmd:"] + runcmd
    return "\n".join(lines) + "\n"


def _user_section(s: Settings) -> list[str]:
    # The singular "user:" renames the image's default user and keeps its groups;
    # "sudo: null" drops cloud-init's default passwordless sudo rule.
    lines = ["user:", f"  name: {yaml_str(s.user or '')}", "  shell: /bin/bash"]
    if s.password_hash:
        lines += ["  lock_passwd: false", f"  passwd: {yaml_str(s.password_hash)}"]
    else:
        lines.append("  lock_passwd: true")
    if s.ssh_authorized_keys:
        lines.append("  ssh_authorized_keys:")
        lines += [f"    - {yaml_str(key)}" for key in s.ssh_authorized_keys]
    lines.append("  sudo: null")
    return lines


def _network_config(s: Settings) -> str:
    if not s.wifi_ssid:
        return ""
    lines = ["network:", "  version: 2", "  ethernets:", "    eth0:", "      dhcp4: true",
             "      dhcp6: true", "      optional: true", "  wifis:", "    wlan0:",
             "      dhcp4: true"]
    if s.wifi_country:
        lines.append(f"      regulatory-domain: {yaml_str(s.wifi_country)}")
    lines += ["      access-points:", f"        {yaml_str(s.wifi_ssid)}:"]
    if s.wifi_hidden:
        lines.append("          hidden: true")
    psk = wifi_psk(s)
    if psk is None:
        lines += ["          auth:", "            key-management: none"]
    else:
        lines.append(f"          password: {yaml_str(psk)}")
    lines.append("      optional: true")
    return "\n".join(lines) + "\n"


# ---- firstrun.sh ------------------------------------------------------------------


def firstrun_script(s: Settings) -> bytes:
    q = shlex.quote
    lines = ["#!/bin/sh", "# first-boot settings written by rpiboot-provision", "set +e",
             "FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)",
             "FIRSTUSERHOME=$(getent passwd 1000 | cut -d: -f6)"]
    if s.hostname:
        lines += _firstrun_hostname(s.hostname)
    if s.ssh_enabled:
        lines += _firstrun_ssh(s)
    if s.user:
        lines += _firstrun_user(s)
    if s.wifi_ssid:
        lines += _firstrun_wifi(s)
    elif s.wifi_country:
        lines += [f"raspi-config nonint do_wifi_country {q(s.wifi_country)}", "rfkill unblock wifi"]
    if s.keyboard_layout or s.timezone:
        lines += _firstrun_keymap_timezone(s)
    if s.locale:
        lines += _firstrun_locale(s.locale)
    lines += ["for dir in /boot/firmware /boot; do",
              '   rm -f "$dir/firstrun.sh"',
              '   if [ -f "$dir/cmdline.txt" ]; then',
              "      sed -i -e 's| systemd.run=[^ ]*||' -e 's| systemd.run_success_action=[^ ]*||' "
              "-e 's| systemd.unit=kernel-command-line.target||' \"$dir/cmdline.txt\"",
              "   fi", "done", "exit 0"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _if_imager_custom(then: list[str], otherwise: list[str]) -> list[str]:
    return ([f"if [ -x {IMAGER_CUSTOM} ]; then"] + ["   " + line for line in then] + ["else"]
            + ["   " + line for line in otherwise] + ["fi"])


def _firstrun_hostname(host: str) -> list[str]:
    # ``host`` passed validate_settings: letters, digits and '-' only, safe in sed and sh.
    return ["CURRENT_HOSTNAME=$(tr -d ' \\t\\n\\r' </etc/hostname)"] + _if_imager_custom(
        [f"{IMAGER_CUSTOM} set_hostname {host}"],
        [f"echo {host} >/etc/hostname",
         f"sed -i \"s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t{host}/g\" /etc/hosts"])


def _firstrun_ssh(s: Settings) -> list[str]:
    keys = " ".join(shlex.quote(k) for k in s.ssh_authorized_keys)
    flag = "-p" if s.ssh_password_auth else "-k"
    fallback = []
    if keys:
        fallback += ['install -o "$FIRSTUSER" -m 700 -d "$FIRSTUSERHOME/.ssh"',
                     f"printf '%s\\n' {keys} >>\"$FIRSTUSERHOME/.ssh/authorized_keys\"",
                     'chown "$FIRSTUSER:$FIRSTUSER" "$FIRSTUSERHOME/.ssh/authorized_keys"',
                     'chmod 600 "$FIRSTUSERHOME/.ssh/authorized_keys"']
    auth = "yes" if s.ssh_password_auth else "no"
    fallback += [f"echo 'PasswordAuthentication {auth}' >>/etc/ssh/sshd_config",
                 "systemctl enable ssh"]
    return _if_imager_custom([f"{IMAGER_CUSTOM} enable_ssh {flag} {keys}".rstrip()], fallback)


def _firstrun_user(s: Settings) -> list[str]:
    user, password_hash = shlex.quote(s.user or ""), shlex.quote(s.password_hash or "")
    rename = [f"NEWUSER={user}"]
    if s.password_hash:
        rename.append(f"printf '%s:%s\\n' \"$FIRSTUSER\" {password_hash} | chpasswd -e")
    rename += ['if [ "$FIRSTUSER" != "$NEWUSER" ]; then',
               '   usermod -l "$NEWUSER" "$FIRSTUSER"',
               '   usermod -m -d "/home/$NEWUSER" "$NEWUSER"',
               '   groupmod -n "$NEWUSER" "$FIRSTUSER"',
               '   for f in /etc/lightdm/lightdm.conf /etc/systemd/system/getty@tty1.service.d/'
               'autologin.conf /etc/sudoers.d/010_pi-nopasswd; do',
               '      [ -f "$f" ] && sed -i "s/\\b$FIRSTUSER\\b/$NEWUSER/" "$f"',
               "   done", "fi"]
    return ([f"if [ -x {USERCONF} ]; then", f"   {USERCONF} {user} {password_hash}", "else"]
            + ["   " + line for line in rename] + ["fi"])


def _firstrun_wifi(s: Settings) -> list[str]:
    q = shlex.quote
    psk = wifi_psk(s)
    args = ("-h " if s.wifi_hidden else "") + q(s.wifi_ssid or "")
    args += f" {q(psk or '')} {q(s.wifi_country or '')}"
    conf = [f"country={s.wifi_country}"] if s.wifi_country else []
    conf += ["ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev", "ap_scan=1",
             "update_config=1", "network={"]
    if s.wifi_hidden:
        conf.append("\tscan_ssid=1")
    conf.append(f"\tssid={(s.wifi_ssid or '').encode('utf-8').hex()}")
    conf += [f"\tpsk={psk}", "\tkey_mgmt=WPA-PSK"] if psk else ["\tkey_mgmt=NONE"]
    conf.append("}")
    fallback = [f"printf '%s\\n' {' '.join(q(line) for line in conf)} "
                ">/etc/wpa_supplicant/wpa_supplicant.conf",
                "chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf", "rfkill unblock wifi",
                "for f in /var/lib/systemd/rfkill/*:wlan; do echo 0 >\"$f\"; done"]
    return _if_imager_custom([f"{IMAGER_CUSTOM} set_wlan {args}"], fallback)


def _firstrun_keymap_timezone(s: Settings) -> list[str]:
    q = shlex.quote
    then, otherwise = [], []
    if s.keyboard_layout:
        then.append(f"{IMAGER_CUSTOM} set_keymap {q(s.keyboard_layout)}")
        otherwise += [f"printf 'XKBMODEL=\"pc105\"\\nXKBLAYOUT=\"%s\"\\nXKBVARIANT=\"\"\\n"
                      f"XKBOPTIONS=\"\"\\n' {q(s.keyboard_layout)} >/etc/default/keyboard",
                      "dpkg-reconfigure -f noninteractive keyboard-configuration"]
    if s.timezone:
        then.append(f"{IMAGER_CUSTOM} set_timezone {q(s.timezone)}")
        otherwise += ["rm -f /etc/localtime", f"echo {q(s.timezone)} >/etc/timezone",
                      "dpkg-reconfigure -f noninteractive tzdata"]
    return _if_imager_custom(then, otherwise)


def _firstrun_locale(locale: str) -> list[str]:
    q = shlex.quote
    charset = locale.partition(".")[2].partition("@")[0]
    fallback = []
    if charset:
        line = q(f"{locale} {charset}")
        fallback += [f"grep -qx {line} /etc/locale.gen || echo {line} >>/etc/locale.gen",
                     "locale-gen"]
    fallback.append(f"update-locale LANG={q(locale)}")
    return (["if command -v raspi-config >/dev/null; then",
             f"   raspi-config nonint do_change_locale {q(locale)}", "else"]
            + ["   " + line for line in fallback] + ["fi"])
