"""Helpers shared by the ledger tests."""

from __future__ import annotations

from rpiboot.provision.ledger import Ledger


def new_board(ledger: Ledger, serial: str = "10000001", profile_id: str = "profile-1",
              port: str = "1-1.2") -> int:
    return ledger.begin_board(port=port, chip="2711", serial=serial, profile_name="line",
                              profile_id=profile_id, host="host-a", tool_version="test")
