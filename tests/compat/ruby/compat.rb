# Ruby mysql2 gem: query (text), prepare/execute (server-side prepared
# statements), and a small connection pool that rolls back on checkin and
# pings on checkout (what connection_pool + ActiveRecord do with it).
# Reads COMPAT_HOST/PORT/USER/PASSWORD/DB, prints one JSON line;
# COMPAT_ROTATION=0 skips the rotation loop.
require 'json'
require 'bigdecimal'
require 'mysql2'

CFG = {
  host: ENV.fetch('COMPAT_HOST', '127.0.0.1'), port: Integer(ENV.fetch('COMPAT_PORT')),
  username: ENV.fetch('COMPAT_USER'), password: ENV.fetch('COMPAT_PASSWORD'),
  database: ENV.fetch('COMPAT_DB'), encoding: 'utf8mb4'
}.freeze
ROTATION = ENV.fetch('COMPAT_ROTATION', '1') == '1'
LOOP_SECS = Float(ENV.fetch('COMPAT_LOOP_SECS', '4'))

INT_V = 42
DEC_V = '12345.6789'
TEXT_V = "h\u00e9llo \u{1F600} w\u00f6rld \u2713"
DT_V = '2024-02-29 13:14:15.123456'
BLOB_V = [0, 1, 2, 255, 254, 0x27, 0x5c, 0].pack('C*')
CREATE_T = 'CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), ' \
           'dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4'
READBACK = 'SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), ' \
           "DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), n IS NULL, HEX(b) FROM t WHERE id = ?"
BIG = "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000"

$out = { client: 'ruby-mysql2', version: "#{Mysql2::VERSION} (ruby #{RUBY_VERSION}, #{Mysql2::Client.info[:version]})",
         failures: [], facts: {}, rotation: nil }
$facts = $out[:facts]

def check(name, cond, detail = '')
  $out[:failures] << "#{name}: #{detail}" unless cond
end

def strs(row)
  row.map { |v| v.nil? ? 'NULL' : v.to_s.dup.force_encoding('UTF-8') }
end

def step(name)
  yield
rescue StandardError => e
  $out[:failures] << "#{name}: #{e.class}: #{e.message}"
  warn e.full_message
end

# A minimal pool in the style of connection_pool + ActiveRecord's adapter.
class Pool
  def initialize(size)
    @idle = []
    @size = size
  end

  def with
    c = @idle.pop || Mysql2::Client.new(CFG)
    c.ping or raise 'ping failed'
    yield c
  ensure
    c&.query('ROLLBACK')
    @idle.push(c) if c
  end
end

c = Mysql2::Client.new(CFG)
tid0 = c.thread_id

step('text_query') { $facts[:text_query] = strs(c.query("SELECT 1 + 1, 'x'", as: :array).first) }
step('prepared') do
  c.query('DROP TABLE IF EXISTS t')
  c.query(CREATE_T)
  st = c.prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)')
  st.execute(INT_V, BigDecimal(DEC_V), TEXT_V, DT_V, nil, BLOB_V)
  st.close
  st = c.prepare(READBACK)
  $facts[:readback] = strs(st.execute(INT_V, as: :array).first)
  st.close
  st = c.prepare('SELECT d, s, dt, n, b FROM t WHERE id = ?')
  r = st.execute(INT_V).first
  st.close
  check('decimal', r['d'] == BigDecimal(DEC_V), r['d'].inspect)
  check('text', r['s'] == TEXT_V, r['s'].inspect)
  check('datetime', r['dt'].strftime('%Y-%m-%d %H:%M:%S.%6N') == DT_V, r['dt'].inspect)
  check('null', r['n'].nil?, r['n'].inspect)
  check('blob', r['b'].b == BLOB_V, r['b'].inspect)
end
step('big') do
  rows = c.query(BIG, as: :array).to_a
  $facts[:big_rows] = rows.size
  $facts[:big_sum] = rows.sum { |r| r[0] }
  check('big last row', rows[49_999][1] == 'row-50000', rows[49_999].inspect)
  st = c.prepare("#{BIG} WHERE seq > ?")
  $facts[:big_rows_prepared] = st.execute(0, as: :array).to_a.size
  st.close
  n = 0
  c.query(BIG, stream: true, cache_rows: false).each { n += 1 }
  $facts[:big_rows_streamed] = n
end
step('transaction') do
  c.query('DROP TABLE IF EXISTS tx')
  c.query('CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB')
  c.query('BEGIN')
  c.prepare('INSERT INTO tx VALUES (?)').execute(1)
  c.query('ROLLBACK')
  $facts[:after_rollback] = c.query('SELECT COUNT(*) AS n FROM tx').first['n']
  c.query('START TRANSACTION')
  c.prepare('INSERT INTO tx VALUES (?)').execute(2)
  c.query('COMMIT')
  $facts[:after_commit] = c.query('SELECT COUNT(*) AS n FROM tx').first['n']
end
step('syntax_error') do
  begin
    c.query('SELEC 1')
    check('syntax error', false, 'no error')
  rescue Mysql2::Error => e
    $facts[:syntax_error_code] = e.error_number
  end
  $facts[:after_error] = c.query('SELECT 2 AS v').first['v']
  $facts[:same_conn_after_error] = c.thread_id == tid0
end
step('pool') do
  pool = Pool.new(1)
  first = nil
  pool.with do |pc|
    first = pc.thread_id
    pc.query('BEGIN')
    pc.query('INSERT INTO tx VALUES (10)')
  end
  pool.with do |pc|
    $facts[:pool_after_reset] = strs(pc.query('SELECT COUNT(*), 3 FROM tx WHERE id = 10', as: :array).first)
    $facts[:pool_same_conn] = pc.thread_id == first
  end
end
step('rotation') do
  next unless ROTATION

  rot = { iterations: 0, errors: 0, first_error: nil, users: [], conn_ids: [], server_ids: [] }
  st = c.prepare('SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1')
  puts 'LOOP_START'
  $stdout.flush
  t_end = Process.clock_gettime(Process::CLOCK_MONOTONIC) + LOOP_SECS
  i = 0
  while Process.clock_gettime(Process::CLOCK_MONOTONIC) < t_end
    i += 1
    begin
      u, sid, v = st.execute(i, as: :array).first
      raise "got #{v} for #{i}" unless v == i + 1

      rot[:users] << u unless rot[:users].include?(u)
      rot[:server_ids] << sid unless rot[:server_ids].include?(sid)
    rescue StandardError => e
      rot[:errors] += 1
      rot[:first_error] ||= "iteration #{i}: #{e.class}: #{e.message}"
    end
    rot[:conn_ids] << c.thread_id unless rot[:conn_ids].include?(c.thread_id)
    rot[:iterations] = i
    sleep 0.02
  end
  $out[:rotation] = rot
end
c.close
puts JSON.generate($out)
