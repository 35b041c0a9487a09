<?php
// PHP client compatibility: `php compat.php pdo-emulated|pdo-native|mysqli`.
// Reads COMPAT_HOST/PORT/USER/PASSWORD/DB, runs the scenario of
// docs/compat.md and prints one JSON line. COMPAT_ROTATION=0 skips the
// rotation loop.
declare(strict_types=1);

$mode = $argv[1] ?? '';
$host = getenv('COMPAT_HOST') ?: '127.0.0.1';
$port = (int) getenv('COMPAT_PORT');
$user = getenv('COMPAT_USER');
$pass = getenv('COMPAT_PASSWORD');
$db = getenv('COMPAT_DB');
$rotation = getenv('COMPAT_ROTATION') !== '0';
$loopSecs = (float) (getenv('COMPAT_LOOP_SECS') ?: '4');

const INT_V = 42;
const DEC_V = '12345.6789';
const TEXT_V = "h\u{e9}llo \u{1F600} w\u{f6}rld \u{2713}";
const DT_V = '2024-02-29 13:14:15.123456';
define('BLOB_V', "\x00\x01\x02\xff\xfe'\\\x00");
const CREATE_T = 'CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), '
    . 'dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4';
const READBACK = "SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), "
    . "DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), n IS NULL, HEX(b) FROM t WHERE id = ?";
const BIG = "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000";

$out = ['client' => "php-$mode", 'version' => '', 'failures' => [], 'facts' => new stdClass(), 'rotation' => null];
$facts = [];

function fail(string $what): void
{
    global $out;
    $out['failures'][] = $what;
}

function check(string $name, bool $cond, string $detail = ''): void
{
    if (!$cond) {
        fail("$name: $detail");
    }
}

function strs(array $row): array
{
    return array_map(fn($v) => $v === null ? 'NULL' : (string) $v, array_values($row));
}

function step(string $name, callable $fn): void
{
    try {
        $fn();
    } catch (Throwable $e) {
        fail("$name: " . get_class($e) . ': ' . $e->getMessage());
        fwrite(STDERR, (string) $e . "\n");
    }
}

/** $it($i) returns [current_user, connection_id]; $tid() the client's id of the connection. */
function rotation_loop(callable $it, ?callable $tid): void
{
    global $out, $rotation, $loopSecs;
    if (!$rotation) {
        return;
    }
    $rot = ['iterations' => 0, 'errors' => 0, 'first_error' => null, 'users' => [], 'conn_ids' => $tid ? [] : null, 'server_ids' => []];
    echo "LOOP_START\n";
    fflush(STDOUT);
    $end = microtime(true) + $loopSecs;
    $i = 0;
    while (microtime(true) < $end) {
        $i++;
        try {
            [$u, $sid] = $it($i);
            if (!in_array($u, $rot['users'], true)) {
                $rot['users'][] = $u;
            }
            if (!in_array($sid, $rot['server_ids'], true)) {
                $rot['server_ids'][] = $sid;
            }
        } catch (Throwable $e) {
            $rot['errors']++;
            $rot['first_error'] ??= "iteration $i: " . get_class($e) . ': ' . $e->getMessage();
        }
        if ($tid) {
            $t = $tid();
            if (!in_array($t, $rot['conn_ids'], true)) {
                $rot['conn_ids'][] = $t;
            }
        }
        $rot['iterations'] = $i;
        usleep(20000);
    }
    $out['rotation'] = $rot;
}

if ($mode === 'pdo-emulated' || $mode === 'pdo-native') {
    $emulate = $mode === 'pdo-emulated';
    $dsn = "mysql:host=$host;port=$port;dbname=$db;charset=utf8mb4";
    $opts = [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_EMULATE_PREPARES => $emulate];
    $pdo = new PDO($dsn, $user, $pass, $opts);
    $out['version'] = PHP_VERSION . ' (' . $pdo->getAttribute(PDO::ATTR_CLIENT_VERSION) . ')';
    $cid = fn(PDO $p) => (int) $p->query('SELECT CONNECTION_ID()')->fetchColumn();

    step('text_query', function () use ($pdo, &$facts) {
        $facts['text_query'] = strs($pdo->query("SELECT 1 + 1, 'x'")->fetch(PDO::FETCH_NUM));
    });
    step('prepared', function () use ($pdo, &$facts) {
        $pdo->exec('DROP TABLE IF EXISTS t');
        $pdo->exec(CREATE_T);
        $st = $pdo->prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)');
        $st->bindValue(1, INT_V, PDO::PARAM_INT);
        $st->bindValue(2, DEC_V, PDO::PARAM_STR);
        $st->bindValue(3, TEXT_V, PDO::PARAM_STR);
        $st->bindValue(4, DT_V, PDO::PARAM_STR);
        $st->bindValue(5, null, PDO::PARAM_NULL);
        $st->bindValue(6, BLOB_V, PDO::PARAM_LOB);
        $st->execute();
        $st = $pdo->prepare(READBACK);
        $st->execute([INT_V]);
        $facts['readback'] = strs($st->fetch(PDO::FETCH_NUM));
        $st = $pdo->prepare('SELECT d, s, dt, n, b FROM t WHERE id = ?');
        $st->execute([INT_V]);
        [$d, $s, $dt, $n, $b] = $st->fetch(PDO::FETCH_NUM);
        check('decimal', (string) $d === DEC_V, var_export($d, true));
        check('text', $s === TEXT_V, var_export($s, true));
        check('datetime', (string) $dt === DT_V, var_export($dt, true));
        check('null', $n === null, var_export($n, true));
        check('blob', $b === BLOB_V, bin2hex((string) $b));
    });
    step('big', function () use ($pdo, &$facts) {
        $rows = $pdo->query(BIG)->fetchAll(PDO::FETCH_NUM);
        $facts['big_rows'] = count($rows);
        $facts['big_sum'] = array_sum(array_map(fn($r) => (int) $r[0], $rows));
        check('big last row', $rows[49999][1] === 'row-50000', json_encode($rows[49999]));
        $st = $pdo->prepare(BIG . ' WHERE seq > ?');
        $st->execute([0]);
        $facts['big_rows_prepared'] = count($st->fetchAll(PDO::FETCH_NUM));
    });
    step('transaction', function () use ($pdo, &$facts) {
        $pdo->exec('DROP TABLE IF EXISTS tx');
        $pdo->exec('CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB');
        $pdo->beginTransaction();
        $pdo->prepare('INSERT INTO tx VALUES (?)')->execute([1]);
        $pdo->rollBack();
        $facts['after_rollback'] = (int) $pdo->query('SELECT COUNT(*) FROM tx')->fetchColumn();
        $pdo->beginTransaction();
        $pdo->prepare('INSERT INTO tx VALUES (?)')->execute([2]);
        $pdo->commit();
        $facts['after_commit'] = (int) $pdo->query('SELECT COUNT(*) FROM tx')->fetchColumn();
    });
    step('syntax_error', function () use ($pdo, &$facts, $cid) {
        $before = $cid($pdo);
        try {
            $pdo->query('SELEC 1');
            check('syntax error', false, 'no exception');
        } catch (PDOException $e) {
            $facts['syntax_error_code'] = $e->errorInfo[1];
        }
        $facts['after_error'] = (int) $pdo->query('SELECT 2')->fetchColumn();
        $facts['same_conn_after_error'] = $cid($pdo) === $before;
    });
    step('pool', function () use ($dsn, $user, $pass, $opts, &$facts, $cid) {
        // PDO's pool is its persistent connections: a connection left in a
        // transaction is rolled back when the script releases it, and the
        // next `new PDO` with the same DSN gets it back.
        $p = new PDO($dsn, $user, $pass, $opts + [PDO::ATTR_PERSISTENT => true]);
        $first = $cid($p);
        $p->beginTransaction();
        $p->exec('INSERT INTO tx VALUES (10)');
        $p->rollBack(); // what PDO does on release of a persistent handle in a transaction
        $p = null;
        $p = new PDO($dsn, $user, $pass, $opts + [PDO::ATTR_PERSISTENT => true]);
        $facts['pool_after_reset'] = strs($p->query('SELECT COUNT(*), 3 FROM tx WHERE id = 10')->fetch(PDO::FETCH_NUM));
        $facts['pool_same_conn'] = $cid($p) === $first;
    });
    step('rotation', function () use ($pdo) {
        // PDO has no API for the connection id of the handshake; sqlease's
        // own count of accepted clients shows that no reconnect happened.
        $st = $pdo->prepare('SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1');
        rotation_loop(function (int $i) use ($st) {
            $st->execute([$i]);
            [$u, $sid, $v] = $st->fetch(PDO::FETCH_NUM);
            $st->closeCursor();
            if ((int) $v !== $i + 1) {
                throw new RuntimeException("got $v for $i");
            }
            return [$u, (int) $sid];
        }, null);
    });
} elseif ($mode === 'mysqli') {
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
    $m = new mysqli($host, $user, $pass, $db, $port);
    $m->set_charset('utf8mb4');
    $out['version'] = PHP_VERSION . ' (' . mysqli_get_client_info() . ')';
    $tid0 = $m->thread_id;

    step('text_query', function () use ($m, &$facts) {
        $facts['text_query'] = strs($m->query("SELECT 1 + 1, 'x'")->fetch_row());
    });
    step('prepared', function () use ($m, &$facts) {
        $m->query('DROP TABLE IF EXISTS t');
        $m->query(CREATE_T);
        $st = $m->prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)');
        $id = INT_V;
        $d = DEC_V;
        $s = TEXT_V;
        $dt = DT_V;
        $n = null;
        $b = null;
        $st->bind_param('isssib', $id, $d, $s, $dt, $n, $b);
        $st->send_long_data(5, substr(BLOB_V, 0, 3));
        $st->send_long_data(5, substr(BLOB_V, 3));
        $st->execute();
        $st->close();
        $st = $m->prepare(READBACK);
        $id = INT_V;
        $st->bind_param('i', $id);
        $st->execute();
        $facts['readback'] = strs($st->get_result()->fetch_row());
        $st->close();
        $st = $m->prepare('SELECT d, s, dt, n, b FROM t WHERE id = ?');
        $st->bind_param('i', $id);
        $st->execute();
        [$d, $s, $dt, $n, $b] = $st->get_result()->fetch_row();
        check('decimal', (string) $d === DEC_V, var_export($d, true));
        check('text', $s === TEXT_V, var_export($s, true));
        check('datetime', (string) $dt === DT_V, var_export($dt, true));
        check('null', $n === null, var_export($n, true));
        check('blob', $b === BLOB_V, bin2hex((string) $b));
        // execute_query (PHP 8.2): prepare + bind + execute in one call
        $facts['execute_query'] = strs($m->execute_query('SELECT ?, ?', [INT_V, TEXT_V])->fetch_row());
    });
    step('big', function () use ($m, &$facts) {
        $rows = $m->query(BIG)->fetch_all();
        $facts['big_rows'] = count($rows);
        $facts['big_sum'] = array_sum(array_map(fn($r) => (int) $r[0], $rows));
        check('big last row', $rows[49999][1] === 'row-50000', json_encode($rows[49999]));
        $st = $m->prepare(BIG . ' WHERE seq > ?');
        $z = 0;
        $st->bind_param('i', $z);
        $st->execute();
        $facts['big_rows_prepared'] = count($st->get_result()->fetch_all());
        $st->close();
        // unbuffered
        $r = $m->query(BIG, MYSQLI_USE_RESULT);
        $k = 0;
        while ($r->fetch_row()) {
            $k++;
        }
        $r->free();
        $facts['big_rows_unbuffered'] = $k;
    });
    step('transaction', function () use ($m, &$facts) {
        $m->query('DROP TABLE IF EXISTS tx');
        $m->query('CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB');
        $m->begin_transaction();
        $m->query('INSERT INTO tx VALUES (1)');
        $m->rollback();
        $facts['after_rollback'] = (int) $m->query('SELECT COUNT(*) FROM tx')->fetch_row()[0];
        $m->begin_transaction();
        $m->query('INSERT INTO tx VALUES (2)');
        $m->commit();
        $facts['after_commit'] = (int) $m->query('SELECT COUNT(*) FROM tx')->fetch_row()[0];
    });
    step('syntax_error', function () use ($m, &$facts, $tid0) {
        try {
            $m->query('SELEC 1');
            check('syntax error', false, 'no exception');
        } catch (mysqli_sql_exception $e) {
            $facts['syntax_error_code'] = $e->getCode();
        }
        $facts['after_error'] = (int) $m->query('SELECT 2')->fetch_row()[0];
        $facts['same_conn_after_error'] = $m->thread_id === $tid0;
    });
    step('pool', function () use ($host, $user, $pass, $db, $port, &$facts) {
        // mysqli's persistent connections ("p:" host): on reuse mysqlnd
        // resets the session (COM_CHANGE_USER), which also rolls back.
        $p = new mysqli("p:$host", $user, $pass, $db, $port);
        $first = $p->thread_id;
        $p->query('SET @x = 42');
        $p->begin_transaction();
        $p->query('INSERT INTO tx VALUES (10)');
        $p->close();
        $p = new mysqli("p:$host", $user, $pass, $db, $port);
        $facts['pool_after_reset'] = strs($p->query('SELECT @x IS NULL, (SELECT COUNT(*) FROM tx WHERE id = 10), 3')->fetch_row());
        $facts['pool_same_conn'] = $p->thread_id === $first;
        $p->close();
    });
    step('rotation', function () use ($m) {
        $st = $m->prepare('SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1');
        rotation_loop(function (int $i) use ($st) {
            $st->bind_param('i', $i);
            $st->execute();
            [$u, $sid, $v] = $st->get_result()->fetch_row();
            if ((int) $v !== $i + 1) {
                throw new RuntimeException("got $v for $i");
            }
            return [$u, (int) $sid];
        }, fn() => $m->thread_id);
    });
} else {
    fwrite(STDERR, "usage: php compat.php pdo-emulated|pdo-native|mysqli\n");
    exit(2);
}
$out['facts'] = (object) $facts;
echo json_encode($out, JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
