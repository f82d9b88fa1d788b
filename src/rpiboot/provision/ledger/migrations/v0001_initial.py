"""Schema 1: boards, their steps, claims, unit numbers and identity pools.

Times are Unix seconds (DOUBLE PRECISION); JSON is stored as TEXT; booleans as INTEGER 0/1, so
the same statements and the same values work on SQLite and PostgreSQL.
"""

STATEMENTS = [
    # Every board attempt. result is "in_progress" until finish_board commits the outcome
    # ("ok" or a failure code), so a crash never leaves a record that reads as success.
    """CREATE TABLE boards (
        id {id_pk},
        serial TEXT,
        chip TEXT,
        port TEXT,
        revision TEXT,
        mac TEXT,
        otp TEXT,
        board TEXT,
        eeprom_sha256 TEXT,
        eeprom_config TEXT,
        image_sha256 TEXT,
        bytes_written BIGINT,
        verified INTEGER,
        unit BIGINT,
        station TEXT NOT NULL,
        host TEXT,
        tool_version TEXT,
        profile_name TEXT,
        profile_id TEXT,
        result TEXT NOT NULL,
        error TEXT,
        started DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION
    )""",
    "CREATE INDEX boards_serial ON boards (serial, profile_id, result)",
    "CREATE INDEX boards_finished ON boards (finished)",
    """CREATE TABLE steps (
        id {id_pk},
        board_id BIGINT NOT NULL REFERENCES boards (id),
        step TEXT NOT NULL,
        result TEXT NOT NULL,
        started DOUBLE PRECISION,
        finished DOUBLE PRECISION,
        details TEXT
    )""",
    "CREATE INDEX steps_board ON steps (board_id)",
    # One row per serial being provisioned; owner is one open Ledger (station, host, process).
    """CREATE TABLE claims (
        serial TEXT PRIMARY KEY,
        profile_id TEXT,
        owner TEXT NOT NULL,
        station TEXT NOT NULL,
        host TEXT,
        board_id BIGINT,
        claimed DOUBLE PRECISION NOT NULL,
        lease DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL
    )""",
    # Counters taken with UPDATE ... RETURNING: the row lock (PostgreSQL) or the write
    # transaction (SQLite) makes them atomic, and a rolled-back take leaves no gap.
    """CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )""",
    "INSERT INTO counters (name, value) VALUES ('unit', 0)",
    """CREATE TABLE units (
        unit BIGINT PRIMARY KEY,
        board_id BIGINT,
        station TEXT NOT NULL,
        taken DOUBLE PRECISION NOT NULL
    )""",
    # Identity pools: pre-allocated rows (JSON object of column -> value), each handed out once.
    """CREATE TABLE pools (
        id {id_pk},
        pool TEXT NOT NULL,
        data TEXT NOT NULL,
        board_id BIGINT,
        station TEXT,
        taken DOUBLE PRECISION,
        imported DOUBLE PRECISION NOT NULL,
        UNIQUE (pool, data)
    )""",
    "CREATE INDEX pools_free ON pools (pool, board_id, id)",
]
