"""mysql-connector-python (Oracle's driver; server-side prepared statements
with a prepared cursor, its own pool that resets sessions on return)."""
import datetime
import decimal

import mysql.connector
from mysql.connector import errors, pooling

from compat_common import (BIG, BLOB_V, CREATE_T, DB, DEC_V, HOST, INT_V, PASSWORD, PORT, READBACK, TEXT_V,
                           USER, Result, rotation_loop, s)

ARGS = dict(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, charset="utf8mb4",
            collation="utf8mb4_general_ci", autocommit=True)
conn = mysql.connector.connect(**ARGS)
res = Result("mysql-connector-python",
             f"{mysql.connector.__version__} ({'C extension' if type(conn).__name__ == 'CMySQLConnection' else 'pure Python'})")
cur = conn.cursor()
pcur = conn.cursor(prepared=True)
tid0 = conn.connection_id
DT = datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)


def text_query():
    cur.execute("SELECT 1 + 1, 'x'")
    res.facts["text_query"] = [s(v) for v in cur.fetchone()]


def prepared():
    cur.execute("DROP TABLE IF EXISTS t")
    cur.execute(CREATE_T)
    pcur.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
                 (INT_V, decimal.Decimal(DEC_V), TEXT_V, DT, None, BLOB_V))
    pcur.execute(READBACK.format(p="?"), (INT_V,))
    res.facts["readback"] = [s(v) for v in pcur.fetchone()]
    pcur.execute("SELECT d, s, dt, n, b FROM t WHERE id = ?", (INT_V,))
    d, t, dt, n, b = pcur.fetchone()
    res.check("decimal", d == decimal.Decimal(DEC_V), repr(d))
    res.check("text", t == TEXT_V, repr(t))
    res.check("datetime", dt == DT, repr(dt))
    res.check("null", n is None, repr(n))
    res.check("blob", bytes(b) == BLOB_V, repr(b))


def big():
    cur.execute(BIG)
    rows = cur.fetchall()
    res.facts["big_rows"] = len(rows)
    res.facts["big_sum"] = sum(r[0] for r in rows)
    res.check("big last row", s(rows[-1][1]) == "row-50000", repr(rows[-1]))
    pcur.execute(BIG + " WHERE seq > ?", (0,))
    res.facts["big_rows_prepared"] = len(pcur.fetchall())


def transaction():
    cur.execute("DROP TABLE IF EXISTS tx")
    cur.execute("CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB")
    conn.start_transaction()
    pcur.execute("INSERT INTO tx VALUES (?)", (1,))
    conn.rollback()
    cur.execute("SELECT COUNT(*) FROM tx")
    res.facts["after_rollback"] = cur.fetchone()[0]
    conn.start_transaction()
    pcur.execute("INSERT INTO tx VALUES (?)", (2,))
    conn.commit()
    cur.execute("SELECT COUNT(*) FROM tx")
    res.facts["after_commit"] = cur.fetchone()[0]


def syntax_error():
    try:
        cur.execute("SELEC 1")
        res.check("syntax error", False, "no error raised")
    except errors.ProgrammingError as e:
        res.facts["syntax_error_code"] = e.errno
    cur.execute("SELECT 2")
    res.facts["after_error"] = cur.fetchone()[0]
    res.facts["same_conn_after_error"] = conn.connection_id == tid0


def pool():
    # The connector's own pool resets the session when a connection goes
    # back (COM_RESET_CONNECTION).
    p = pooling.MySQLConnectionPool(pool_name="compat", pool_size=1, pool_reset_session=True, **ARGS)
    c = p.get_connection()
    first = c.connection_id
    k = c.cursor()
    k.execute("SET @x = 42")
    c.start_transaction()
    k.execute("INSERT INTO tx VALUES (10)")
    k.close()
    c.close()  # back to the pool: rolled back and reset
    c = p.get_connection()
    k = c.cursor()
    k.execute("SELECT @x IS NULL, (SELECT COUNT(*) FROM tx WHERE id = 10), 3")
    res.facts["pool_after_reset"] = [s(v) for v in k.fetchone()]
    res.facts["pool_same_conn"] = c.connection_id == first
    k.close()
    c.close()


def rotation():
    stmt = conn.cursor(prepared=True)

    def it(i):
        stmt.execute("SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1", (i,))
        u, sid, v = stmt.fetchone()
        if v != i + 1:
            raise AssertionError(f"got {v} for {i}")
        return s(u), sid
    rotation_loop(res, it, lambda: conn.connection_id)


for name, fn in [("text_query", text_query), ("prepared", prepared), ("big", big),
                 ("transaction", transaction), ("syntax_error", syntax_error), ("pool", pool),
                 ("rotation", rotation)]:
    res.step(name, fn)
conn.close()
res.emit()
