"""Shared scenario pieces for the Python compatibility programs.

Every program reads its target from the environment (COMPAT_HOST, COMPAT_PORT,
COMPAT_USER, COMPAT_PASSWORD, COMPAT_DB), runs the scenario described in
docs/compat.md and prints ONE JSON line on stdout that tests/compat.rs checks.
COMPAT_ROTATION=0 skips the rotation loop (direct runs against MariaDB).
"""
import json
import os
import sys
import time
import traceback

HOST = os.environ.get("COMPAT_HOST", "127.0.0.1")
PORT = int(os.environ.get("COMPAT_PORT", "3306"))
USER = os.environ["COMPAT_USER"]
PASSWORD = os.environ["COMPAT_PASSWORD"]
DB = os.environ["COMPAT_DB"]
ROTATION = os.environ.get("COMPAT_ROTATION", "1") == "1"
LOOP_SECS = float(os.environ.get("COMPAT_LOOP_SECS", "4"))

INT_V = 42
DEC_V = "12345.6789"
TEXT_V = "h\u00e9llo \U0001F600 w\u00f6rld \u2713"
DT_V = "2024-02-29 13:14:15.123456"
BLOB_V = bytes([0, 1, 2, 255, 254, 0x27, 0x5C, 0])

CREATE_T = (
    "CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), "
    "dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4"
)
READBACK = (
    "SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), "
    "DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), n IS NULL, HEX(b) FROM t WHERE id = {p}"
)
BIG = "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000"


class Result:
    def __init__(self, client, version):
        self.out = {"client": client, "version": version, "failures": [], "facts": {}, "rotation": None}
        self.facts = self.out["facts"]

    def check(self, name, cond, detail=""):
        if not cond:
            self.out["failures"].append(f"{name}: {detail}")

    def step(self, name, fn):
        """Runs one part of the scenario; an exception is a failure of that part."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every error is reported
            self.out["failures"].append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)

    def emit(self):
        print(json.dumps(self.out, default=str), flush=True)


def s(v):
    """Normalises a value read back from the server to a string."""
    if v is None:
        return "NULL"
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8")
    return str(v)


def rotation_loop(res, one_iteration, client_thread_id):
    """Runs `one_iteration(i)` -> (current_user, connection_id) for LOOP_SECS,
    counting errors; records the users and ids seen."""
    if not ROTATION:
        return
    rot = {"iterations": 0, "errors": 0, "first_error": None, "users": [], "conn_ids": [], "server_ids": []}
    res.out["rotation"] = rot
    print("LOOP_START", flush=True)
    end = time.monotonic() + LOOP_SECS
    i = 0
    while time.monotonic() < end:
        i += 1
        try:
            user, sid = one_iteration(i)
            if user not in rot["users"]:
                rot["users"].append(user)
            if sid not in rot["server_ids"]:
                rot["server_ids"].append(sid)
        except Exception as e:  # noqa: BLE001
            rot["errors"] += 1
            if rot["first_error"] is None:
                rot["first_error"] = f"iteration {i}: {type(e).__name__}: {e}"
        tid = client_thread_id()
        if tid not in rot["conn_ids"]:
            rot["conn_ids"].append(tid)
        rot["iterations"] = i
        time.sleep(0.02)
