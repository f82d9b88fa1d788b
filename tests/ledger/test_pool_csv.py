"""`rpiboot-provision pool import FILE.csv`: the file is parsed and checked before any import."""

from __future__ import annotations

import pytest

from rpiboot.provision.ledger import PoolImportError, import_pool_csv, open_ledger, read_pool_csv


def write(tmp_path, data: bytes):  # type: ignore[no-untyped-def]
    path = tmp_path / "pool.csv"
    path.write_bytes(data)
    return path


def test_a_spreadsheet_export_reads_as_rows(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfasset,hostname\r\nA-001, line1-001 \r\n\r\n"
                           b'A-002,"line1-002"\r\n')
    assert read_pool_csv(path) == [{"asset": "A-001", "hostname": "line1-001"},
                                   {"asset": "A-002", "hostname": "line1-002"}]


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"asset,hostname\n", "no rows below the header"),
    (b"asset,asset\nA,B\n", "appears twice"),
    (b"asset tag\nA\n", "column name 'asset tag'"),
    (b"pool.x\nA\n", "column name"),
    (b"asset,hostname\nA-001\n", "line 2: 1 values, the header has 2 columns"),
    (b"asset,hostname\nA-001,h1,extra\n", "3 values"),
    (b"asset,hostname\nA-001,\n", "column 'hostname' is empty"),
    (b"asset\nA-001\nA-002\nA-001\n", "row 3 repeats row 1"),
    (b"asset\n\xff\xfe\n", "not UTF-8"),
    (b"asset\n\"A\x07\"\n", "control character"),
])
def test_a_bad_file_is_one_line_naming_the_problem(tmp_path, data, message):
    with pytest.raises(PoolImportError, match=message) as raised:
        read_pool_csv(write(tmp_path, data))
    assert raised.value.code == "pool_invalid" and "\n" not in str(raised.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(PoolImportError, match="cannot read"):
        read_pool_csv(tmp_path / "absent.csv")


def test_import_pool_csv_loads_the_whole_file(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    assert import_pool_csv(ledger, write(tmp_path, b"tag\nT1\nT2\n"), pool="tags") == 2
    assert ledger.pool_status() == {"tags": {"total": 2, "free": 2}}
    ledger.close()
