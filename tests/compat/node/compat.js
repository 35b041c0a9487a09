// Node.js mysql2: query (text), execute (server-side prepared statements,
// cached per connection), and a pool that resets connections on release.
// Reads COMPAT_HOST/PORT/USER/PASSWORD/DB, prints one JSON line;
// COMPAT_ROTATION=0 skips the rotation loop.
'use strict';
const mysql = require('mysql2/promise');
const version = require('mysql2/package.json').version;

const cfg = {
  host: process.env.COMPAT_HOST || '127.0.0.1',
  port: Number(process.env.COMPAT_PORT),
  user: process.env.COMPAT_USER,
  password: process.env.COMPAT_PASSWORD,
  database: process.env.COMPAT_DB,
  charset: 'utf8mb4_general_ci',
  supportBigNumbers: true,
  dateStrings: true,
};
const ROTATION = process.env.COMPAT_ROTATION !== '0';
const LOOP_SECS = Number(process.env.COMPAT_LOOP_SECS || '4');

const INT_V = 42;
const DEC_V = '12345.6789';
const TEXT_V = 'h\u00e9llo \u{1F600} w\u00f6rld \u2713';
const DT_V = '2024-02-29 13:14:15.123456';
const BLOB_V = Buffer.from([0, 1, 2, 255, 254, 0x27, 0x5c, 0]);
const CREATE_T = 'CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), ' +
  'dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4';
const READBACK = 'SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), ' +
  "DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), n IS NULL, HEX(b) FROM t WHERE id = ?";
const BIG = "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000";

const out = { client: 'node-mysql2', version, failures: [], facts: {}, rotation: null };
const facts = out.facts;
const check = (name, cond, detail) => { if (!cond) out.failures.push(`${name}: ${detail}`); };
const strs = (row) => row.map((v) => (v === null ? 'NULL' : Buffer.isBuffer(v) ? v.toString('utf8') : String(v)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function step(name, fn) {
  try {
    await fn();
  } catch (e) {
    out.failures.push(`${name}: ${e.code || ''} ${e.errno || ''} ${e.message}`);
    console.error(e);
  }
}

async function main() {
  const c = await mysql.createConnection(cfg);
  const tid0 = c.threadId;

  await step('text_query', async () => {
    const [rows] = await c.query({ sql: "SELECT 1 + 1, 'x'", rowsAsArray: true });
    facts.text_query = strs(rows[0]);
  });
  await step('prepared', async () => {
    await c.query('DROP TABLE IF EXISTS t');
    await c.query(CREATE_T);
    await c.execute('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)', [INT_V, DEC_V, TEXT_V, DT_V, null, BLOB_V]);
    let [rows] = await c.execute({ sql: READBACK, rowsAsArray: true }, [INT_V]);
    facts.readback = strs(rows[0]);
    [rows] = await c.execute('SELECT d, s, dt, n, b FROM t WHERE id = ?', [INT_V]);
    const r = rows[0];
    check('decimal', String(r.d) === DEC_V, r.d);
    check('text', r.s === TEXT_V, r.s);
    check('datetime', String(r.dt) === DT_V, r.dt);
    check('null', r.n === null, r.n);
    check('blob', Buffer.isBuffer(r.b) && r.b.equals(BLOB_V), r.b && r.b.toString('hex'));
    // the same text through query() (client-side escaping)
    [rows] = await c.query('SELECT ? = s, ? = b FROM t WHERE id = ?', [TEXT_V, BLOB_V, INT_V]);
    facts.query_escaping = strs(Object.values(rows[0]));
  });
  await step('big', async () => {
    let [rows] = await c.query({ sql: BIG, rowsAsArray: true });
    facts.big_rows = rows.length;
    facts.big_sum = rows.reduce((a, r) => a + Number(r[0]), 0);
    check('big last row', rows[49999][1] === 'row-50000', JSON.stringify(rows[49999]));
    [rows] = await c.execute({ sql: BIG + ' WHERE seq > ?', rowsAsArray: true }, [0]);
    facts.big_rows_prepared = rows.length;
  });
  await step('transaction', async () => {
    await c.query('DROP TABLE IF EXISTS tx');
    await c.query('CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB');
    await c.beginTransaction();
    await c.execute('INSERT INTO tx VALUES (?)', [1]);
    await c.rollback();
    let [rows] = await c.query('SELECT COUNT(*) AS n FROM tx');
    facts.after_rollback = Number(rows[0].n);
    await c.beginTransaction();
    await c.execute('INSERT INTO tx VALUES (?)', [2]);
    await c.commit();
    [rows] = await c.query('SELECT COUNT(*) AS n FROM tx');
    facts.after_commit = Number(rows[0].n);
  });
  await step('syntax_error', async () => {
    try {
      await c.query('SELEC 1');
      check('syntax error', false, 'no error');
    } catch (e) {
      facts.syntax_error_code = e.errno;
    }
    try {
      await c.execute('SELEC ?', [1]);
      check('prepare syntax error', false, 'no error');
    } catch (e) {
      facts.prepare_error_code = e.errno;
    }
    const [rows] = await c.query('SELECT 2 AS v');
    facts.after_error = Number(rows[0].v);
    facts.same_conn_after_error = c.threadId === tid0;
  });
  await step('pool', async () => {
    // resetOnRelease: the pool sends COM_RESET_CONNECTION on release.
    const pool = mysql.createPool({ ...cfg, connectionLimit: 1, resetOnRelease: true });
    let pc = await pool.getConnection();
    const first = pc.threadId;
    await pc.query('SET @x = 42');
    await pc.beginTransaction();
    await pc.execute('INSERT INTO tx VALUES (?)', [10]);
    pc.release();
    await sleep(50);
    pc = await pool.getConnection();
    const [rows] = await pc.execute({ sql: 'SELECT @x IS NULL, (SELECT COUNT(*) FROM tx WHERE id = ?), 3', rowsAsArray: true }, [10]);
    facts.pool_after_reset = strs(rows[0]);
    facts.pool_same_conn = pc.threadId === first;
    pc.release();
    // pool.execute: statements cached per pooled connection
    const [r2] = await pool.execute({ sql: 'SELECT ? + 1', rowsAsArray: true }, [1]);
    facts.pool_execute = strs(r2[0]);
    await pool.end();
  });
  await step('rotation', async () => {
    if (!ROTATION) return;
    const rot = { iterations: 0, errors: 0, first_error: null, users: [], conn_ids: [], server_ids: [] };
    console.log('LOOP_START');
    const end = Date.now() + LOOP_SECS * 1000;
    let i = 0;
    while (Date.now() < end) {
      i++;
      try {
        const [rows] = await c.execute({ sql: 'SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1', rowsAsArray: true }, [i]);
        const [u, sid, v] = rows[0];
        if (Number(v) !== i + 1) throw new Error(`got ${v} for ${i}`);
        if (!rot.users.includes(u)) rot.users.push(u);
        if (!rot.server_ids.includes(Number(sid))) rot.server_ids.push(Number(sid));
      } catch (e) {
        rot.errors++;
        if (!rot.first_error) rot.first_error = `iteration ${i}: ${e.code || ''} ${e.message}`;
      }
      if (!rot.conn_ids.includes(c.threadId)) rot.conn_ids.push(c.threadId);
      rot.iterations = i;
      await sleep(20);
    }
    out.rotation = rot;
  });
  await c.end();
}

main()
  .catch((e) => { out.failures.push(`connect: ${e.code || ''} ${e.message}`); console.error(e); })
  .finally(() => console.log(JSON.stringify(out)));
