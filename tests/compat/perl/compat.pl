#!/usr/bin/perl
# Perl DBI + DBD::MariaDB: do/selectrow (text), server-side prepared
# statements (mariadb_server_prepare=1) and client-side ones (the default),
# and DBI's own pool, connect_cached (pings the handle before reuse).
# Reads COMPAT_HOST/PORT/USER/PASSWORD/DB, prints one JSON line;
# COMPAT_ROTATION=0 skips the rotation loop.
use strict;
use warnings;
use utf8;
use DBI qw(:sql_types);
use DBD::MariaDB;
use JSON::PP;
use Time::HiRes qw(time sleep);

my %E = %ENV;
my $dsn = "DBI:MariaDB:database=$E{COMPAT_DB};host=" . ($E{COMPAT_HOST} // '127.0.0.1') . ";port=$E{COMPAT_PORT}";
my ($user, $pass) = ($E{COMPAT_USER}, $E{COMPAT_PASSWORD});
my $rotation = ($E{COMPAT_ROTATION} // '1') eq '1';
my $loop_secs = $E{COMPAT_LOOP_SECS} // 4;

my $INT_V = 42;
my $DEC_V = '12345.6789';
my $TEXT_V = "h\x{e9}llo \x{1F600} w\x{f6}rld \x{2713}";
my $DT_V = '2024-02-29 13:14:15.123456';
my $BLOB_V = pack('C*', 0, 1, 2, 255, 254, 0x27, 0x5c, 0);
my $CREATE_T = 'CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), '
  . 'dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4';
my $READBACK = 'SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), '
  . "DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), n IS NULL, HEX(b) FROM t WHERE id = ?";
my $BIG = "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000";

my %out = (client => 'perl-dbd-mariadb', version => "DBD::MariaDB $DBD::MariaDB::VERSION, DBI $DBI::VERSION",
  failures => [], facts => {}, rotation => undef);
my $facts = $out{facts};

sub check { my ($name, $cond, $detail) = @_; push @{$out{failures}}, "$name: " . ($detail // '') unless $cond; }
sub strs { [map { defined $_ ? "$_" : 'NULL' } @_] }
sub step {
  my ($name, $fn) = @_;
  warn "step $name\n" if $E{COMPAT_TRACE};
  eval { $fn->(); 1 } or do { my $e = $@ || 'unknown error'; chomp $e; push @{$out{failures}}, "$name: $e"; warn "$name: $e\n"; };
}

my %attr = (RaiseError => 1, PrintError => 0, AutoCommit => 1);
my $dbh = DBI->connect($dsn, $user, $pass, { %attr, mariadb_server_prepare => 1 }) or die $DBI::errstr;
$out{version} .= ", libmariadb " . $dbh->{mariadb_clientversion};
my $tid0 = $dbh->{mariadb_thread_id};

step(text_query => sub { $facts->{text_query} = strs($dbh->selectrow_array("SELECT 1 + 1, 'x'")) });
step(prepared => sub {
  $dbh->do('DROP TABLE IF EXISTS t');
  $dbh->do($CREATE_T);
  my $st = $dbh->prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)');
  $st->bind_param(1, $INT_V, SQL_INTEGER);
  $st->bind_param(2, $DEC_V, SQL_DECIMAL);
  $st->bind_param(3, $TEXT_V);
  $st->bind_param(4, $DT_V, SQL_DATETIME);
  $st->bind_param(5, undef, SQL_INTEGER);
  $st->bind_param(6, $BLOB_V, SQL_BLOB);
  $st->execute;
  $facts->{readback} = strs($dbh->selectrow_array($READBACK, undef, $INT_V));
  my ($d, $s, $dt, $n, $b) = $dbh->selectrow_array('SELECT d, s, dt, n, b FROM t WHERE id = ?', undef, $INT_V);
  check('decimal', $d eq $DEC_V, $d);
  check('text', $s eq $TEXT_V, $s);
  check('datetime', $dt eq $DT_V, $dt);
  check('null', !defined $n, $n);
  check('blob', $b eq $BLOB_V, unpack('H*', $b));
  # the same with client-side prepared statements (DBD::MariaDB's default)
  my $emu = DBI->connect($dsn, $user, $pass, { %attr });
  my $q = $emu->prepare('SELECT s, b FROM t WHERE s = ? AND b = ?');
  $q->bind_param(1, $TEXT_V);
  $q->bind_param(2, $BLOB_V, SQL_BLOB);
  $q->execute;
  my ($s2, $b2) = $q->fetchrow_array;
  $q->finish;
  $facts->{emulated_prepare} = [$s2 // 'NULL', unpack('H*', $b2 // '')];
  $emu->disconnect;
});
step(big => sub {
  my $rows = $dbh->selectall_arrayref($BIG);
  $facts->{big_rows} = scalar @$rows;
  my $sum = 0; $sum += $_->[0] for @$rows;
  $facts->{big_sum} = $sum;
  check('big last row', $rows->[49999][1] eq 'row-50000', "@{$rows->[49999]}");
  warn "big: prepared\n" if $E{COMPAT_TRACE};
  $facts->{big_rows_prepared} = scalar @{$dbh->selectall_arrayref("$BIG WHERE seq > ?", undef, 0)};
});
step(transaction => sub {
  $dbh->do('DROP TABLE IF EXISTS tx');
  $dbh->do('CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB');
  $dbh->begin_work;
  $dbh->do('INSERT INTO tx VALUES (?)', undef, 1);
  $dbh->rollback;
  $facts->{after_rollback} = 0 + $dbh->selectrow_array('SELECT COUNT(*) FROM tx');
  $dbh->begin_work;
  $dbh->do('INSERT INTO tx VALUES (?)', undef, 2);
  $dbh->commit;
  $facts->{after_commit} = 0 + $dbh->selectrow_array('SELECT COUNT(*) FROM tx');
});
step(syntax_error => sub {
  eval { $dbh->do('SELEC 1'); check('syntax error', 0, 'no error'); 1 } or $facts->{syntax_error_code} = 0 + $dbh->err;
  $facts->{after_error} = 0 + $dbh->selectrow_array('SELECT 2');
  $facts->{same_conn_after_error} = $dbh->{mariadb_thread_id} == $tid0 ? JSON::PP::true : JSON::PP::false;
});
step(pool => sub {
  # DBI's connect_cached: the cached handle is pinged before reuse; the
  # application rolls back before giving it back.
  my $p = DBI->connect_cached($dsn, $user, $pass, { %attr });
  my $first = $p->{mariadb_thread_id};
  $p->begin_work;
  $p->do('INSERT INTO tx VALUES (10)');
  $p->rollback;
  $p = DBI->connect_cached($dsn, $user, $pass, { %attr });
  $facts->{pool_after_reset} = strs($p->selectrow_array('SELECT COUNT(*), 3 FROM tx WHERE id = 10'));
  $facts->{pool_same_conn} = $p->{mariadb_thread_id} == $first ? JSON::PP::true : JSON::PP::false;
});
step(rotation => sub {
  return unless $rotation;
  my %rot = (iterations => 0, errors => 0, first_error => undef, users => [], conn_ids => [], server_ids => []);
  my $st = $dbh->prepare('SELECT CURRENT_USER(), CONNECTION_ID(), ? + 1');
  $| = 1;
  print "LOOP_START\n";
  my $end = time + $loop_secs;
  my $i = 0;
  while (time < $end) {
    $i++;
    eval {
      $st->execute($i);
      my ($u, $sid, $v) = $st->fetchrow_array;
      $st->finish;
      die "got $v for $i\n" unless $v == $i + 1;
      push @{$rot{users}}, $u unless grep { $_ eq $u } @{$rot{users}};
      push @{$rot{server_ids}}, 0 + $sid unless grep { $_ == $sid } @{$rot{server_ids}};
      1;
    } or do { $rot{errors}++; my $e = $@; chomp $e; $rot{first_error} //= "iteration $i: $e"; };
    my $t = $dbh->{mariadb_thread_id};
    push @{$rot{conn_ids}}, 0 + $t unless grep { $_ == $t } @{$rot{conn_ids}};
    $rot{iterations} = 0 + $i;
    sleep 0.02;
  }
  $out{rotation} = \%rot;
});
$dbh->disconnect;
binmode STDOUT, ':encoding(UTF-8)';
print JSON::PP->new->canonical->encode(\%out), "\n";
