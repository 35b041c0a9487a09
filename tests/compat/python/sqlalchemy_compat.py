"""SQLAlchemy 2 over PyMySQL: Core, an ORM session, and its QueuePool
(rollback on return, pre-ping on checkout)."""
import datetime
import decimal

import pymysql
import sqlalchemy
from sqlalchemy import (DECIMAL, DateTime, Integer, LargeBinary, String, create_engine, exc, select, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from compat_common import (BIG, BLOB_V, DB, DEC_V, HOST, INT_V, PASSWORD, PORT, READBACK, TEXT_V, USER,
                           Result, rotation_loop, s)

res = Result("sqlalchemy", f"{sqlalchemy.__version__} (PyMySQL {pymysql.VERSION_STRING})")
url = sqlalchemy.engine.URL.create("mysql+pymysql", username=USER, password=PASSWORD, host=HOST, port=PORT,
                                   database=DB, query={"charset": "utf8mb4"})
engine = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True, pool_reset_on_return="rollback")
DT = datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)


class Base(DeclarativeBase):
    pass


class T(Base):
    __tablename__ = "t"
    __table_args__ = {"mysql_charset": "utf8mb4"}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    d: Mapped[decimal.Decimal] = mapped_column(DECIMAL(12, 4))
    s: Mapped[str] = mapped_column(String(100))
    dt: Mapped[datetime.datetime] = mapped_column(sqlalchemy.dialects.mysql.DATETIME(fsp=6))
    n: Mapped[int | None] = mapped_column(Integer, nullable=True)
    b: Mapped[bytes] = mapped_column(LargeBinary)


class Tx(Base):
    __tablename__ = "tx"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


def conn_id(c):
    return c.connection.dbapi_connection.thread_id()


def text_query():
    with engine.connect() as c:
        res.facts["text_query"] = [s(v) for v in c.execute(text("SELECT 1 + 1, 'x'")).one()]


def prepared():
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(T(id=INT_V, d=decimal.Decimal(DEC_V), s=TEXT_V, dt=DT, n=None, b=BLOB_V))
        session.commit()
    with Session(engine) as session:
        row = session.execute(text(READBACK.format(p=":id")), {"id": INT_V}).one()
        res.facts["readback"] = [s(v) for v in row]
        o = session.get(T, INT_V)
        res.check("decimal", o.d == decimal.Decimal(DEC_V), repr(o.d))
        res.check("text", o.s == TEXT_V, repr(o.s))
        res.check("datetime", o.dt == DT, repr(o.dt))
        res.check("null", o.n is None, repr(o.n))
        res.check("blob", bytes(o.b) == BLOB_V, repr(o.b))


def big():
    with engine.connect() as c:
        rows = c.execute(text(BIG)).all()
    res.facts["big_rows"] = len(rows)
    res.facts["big_sum"] = sum(r[0] for r in rows)
    res.check("big last row", rows[-1][1] == "row-50000", repr(rows[-1]))


def transaction():
    with Session(engine) as session:
        session.add(Tx(id=1))
        session.flush()
        session.rollback()
        res.facts["after_rollback"] = session.scalar(select(sqlalchemy.func.count()).select_from(Tx))
        session.add(Tx(id=2))
        session.commit()
        res.facts["after_commit"] = session.scalar(select(sqlalchemy.func.count()).select_from(Tx))


def syntax_error():
    with engine.connect() as c:
        first = conn_id(c)
        try:
            c.execute(text("SELEC 1"))
            res.check("syntax error", False, "no error raised")
        except exc.ProgrammingError as e:
            res.facts["syntax_error_code"] = e.orig.args[0]
        c.rollback()
        res.facts["after_error"] = c.execute(text("SELECT 2")).scalar()
        res.facts["same_conn_after_error"] = conn_id(c) == first


def pool():
    with Session(engine) as session:
        first = conn_id(session.connection())
        session.add(Tx(id=10))
        session.flush()
    # closed without commit: the pool rolled the connection back on return
    with Session(engine) as session:
        n = session.scalar(select(sqlalchemy.func.count()).select_from(Tx).where(Tx.id == 10))
        res.facts["pool_after_reset"] = [s(n), s(session.scalar(text("SELECT 3")))]
        res.facts["pool_same_conn"] = conn_id(session.connection()) == first


def rotation():
    ids = []

    def it(i):
        # One ORM session per iteration, each a checkout from the pool.
        with Session(engine) as session:
            u, sid, v = session.execute(text("SELECT CURRENT_USER(), CONNECTION_ID(), :i + 1"), {"i": i}).one()
            ids[:] = [conn_id(session.connection())]
            if v != i + 1:
                raise AssertionError(f"got {v} for {i}")
            o = session.get(T, INT_V)
            if o is None or o.s != TEXT_V:
                raise AssertionError("ORM read back the wrong row")
            return u, sid
    rotation_loop(res, it, lambda: ids[0] if ids else None)


for name, fn in [("text_query", text_query), ("prepared", prepared), ("big", big),
                 ("transaction", transaction), ("syntax_error", syntax_error), ("pool", pool),
                 ("rotation", rotation)]:
    res.step(name, fn)
engine.dispose()
res.emit()
