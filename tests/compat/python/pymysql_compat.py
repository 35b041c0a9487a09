"""PyMySQL (pure Python; client-side parameter interpolation)."""
import pymysql

from compat_common import (BIG, BLOB_V, CREATE_T, DB, DEC_V, DT_V, HOST, INT_V, PASSWORD, PORT, READBACK,
                           TEXT_V, USER, Result, rotation_loop, s)
import datetime
import decimal

res = Result("pymysql", pymysql.VERSION_STRING)


def connect():
    return pymysql.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB,
                           charset="utf8mb4", autocommit=True)


conn = connect()
cur = conn.cursor()
tid0 = conn.thread_id()


def text_query():
    cur.execute("SELECT 1 + 1, 'x'")
    res.facts["text_query"] = [s(v) for v in cur.fetchone()]


def prepared():
    cur.execute("DROP TABLE IF EXISTS t")
    cur.execute(CREATE_T)
    cur.execute("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s)",
                (INT_V, decimal.Decimal(DEC_V), TEXT_V,
                 datetime.datetime(2024, 2, 29, 13, 14, 15, 123456), None, BLOB_V))
    cur.execute(READBACK.replace("%", "%%").format(p="%s"), (INT_V,))
    res.facts["readback"] = [s(v) for v in cur.fetchone()]
    cur.execute("SELECT d, s, dt, n, b FROM t WHERE id = %s", (INT_V,))
    d, t, dt, n, b = cur.fetchone()
    res.check("decimal", d == decimal.Decimal(DEC_V), repr(d))
    res.check("text", t == TEXT_V, repr(t))
    res.check("datetime", dt == datetime.datetime(2024, 2, 29, 13, 14, 15, 123456), repr(dt))
    res.check("null", n is None, repr(n))
    res.check("blob", bytes(b) == BLOB_V, repr(b))


def big():
    cur.execute(BIG)
    rows = cur.fetchall()
    res.facts["big_rows"] = len(rows)
    res.facts["big_sum"] = sum(r[0] for r in rows)
    res.check("big last row", rows[-1][1] == "row-50000", repr(rows[-1]))


def transaction():
    cur.execute("DROP TABLE IF EXISTS tx")
    cur.execute("CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB")
    conn.begin()
    cur.execute("INSERT INTO tx VALUES (%s)", (1,))
    conn.rollback()
    cur.execute("SELECT COUNT(*) FROM tx")
    res.facts["after_rollback"] = cur.fetchone()[0]
    conn.begin()
    cur.execute("INSERT INTO tx VALUES (%s)", (2,))
    conn.commit()
    cur.execute("SELECT COUNT(*) FROM tx")
    res.facts["after_commit"] = cur.fetchone()[0]


def syntax_error():
    try:
        cur.execute("SELEC 1")
        res.check("syntax error", False, "no error raised")
    except pymysql.err.ProgrammingError as e:
        res.facts["syntax_error_code"] = e.args[0]
    cur.execute("SELECT 2")
    res.facts["after_error"] = cur.fetchone()[0]
    res.facts["same_conn_after_error"] = conn.thread_id() == tid0


def pool():
    # PyMySQL has no pool of its own; this is what DBUtils' PooledDB does with
    # it: rollback when a connection is returned, ping when it is taken again.
    conn.begin()
    cur.execute("INSERT INTO tx VALUES (10)")
    conn.rollback()  # returned to the pool
    conn.ping(reconnect=False)  # taken again
    cur.execute("SELECT COUNT(*), 3 FROM tx WHERE id = 10")
    res.facts["pool_after_reset"] = [s(v) for v in cur.fetchone()]
    res.facts["pool_same_conn"] = conn.thread_id() == tid0


def rotation():
    # PyMySQL has no server-side prepared statements: the loop runs the
    # interpolated statement the driver sends.
    def it(i):
        cur.execute("SELECT CURRENT_USER(), CONNECTION_ID(), %s + 1", (i,))
        u, sid, v = cur.fetchone()
        if v != i + 1:
            raise AssertionError(f"got {v} for {i}")
        return u, sid
    rotation_loop(res, it, conn.thread_id)


for name, fn in [("text_query", text_query), ("prepared", prepared), ("big", big),
                 ("transaction", transaction), ("syntax_error", syntax_error), ("pool", pool),
                 ("rotation", rotation)]:
    res.step(name, fn)
conn.close()
res.emit()
