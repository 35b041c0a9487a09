//! A private MariaDB server for tests: `mariadb-install-db` into a temporary
//! directory and `mariadbd` on a free loopback port.
//!
//! One server is shared by all tests of a test binary ([`MariaDb::shared`]).
//! Statics are never dropped, so a small watchdog process kills the server
//! and removes its directory as soon as the test process exits, whichever
//! way it exits.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const ADMIN_USER: &str = "root";
const ADMIN_PASSWORD: &str = "sqlease-test-root";

/// A running private MariaDB server.
pub struct MariaDb {
    port: u16,
    dir: PathBuf,
    /// Keeps the temporary directory alive (removed by the watchdog or on drop).
    _tmp: Option<tempfile::TempDir>,
    child: Mutex<Option<Child>>,
    /// Extra mariadbd options (e.g. TLS certificates).
    extra: Vec<String>,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb").field("port", &self.port).finish()
    }
}

static SHARED: OnceLock<MariaDb> = OnceLock::new();

fn find_binary(name: &str) -> Result<PathBuf> {
    let candidates = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    for dir in candidates {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found: install Debian's mariadb-server (scripts/test.sh does this)")
}

/// Picks a free loopback port (bind to :0 and release it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl MariaDb {
    /// The server shared by every test of this test binary (started on first use).
    pub fn shared() -> &'static MariaDb {
        SHARED.get_or_init(|| match MariaDb::start() {
            Ok(db) => db,
            Err(e) => panic!("cannot start the private MariaDB: {e:#}"),
        })
    }

    /// Starts a new private server (its own data directory and port).
    pub fn start() -> Result<MariaDb> {
        MariaDb::start_with(&[])
    }

    /// Starts a new private server with extra `mariadbd` options.
    pub fn start_with(extra: &[String]) -> Result<MariaDb> {
        let tmp = tempfile::Builder::new()
            .prefix("sqlease-mariadb-")
            .tempdir()?;
        let dir = tmp.path().to_path_buf();
        let install = find_binary("mariadb-install-db")?;
        std::fs::create_dir_all(dir.join("data"))?;
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let out = cmd.output().context("running mariadb-install-db")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(
            dir.join("init.sql"),
            format!(
                "CREATE USER IF NOT EXISTS '{u}'@'127.0.0.1' IDENTIFIED BY '{p}';\n\
                 ALTER USER '{u}'@'127.0.0.1' IDENTIFIED BY '{p}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO '{u}'@'127.0.0.1' WITH GRANT OPTION;\n\
                 CREATE USER IF NOT EXISTS '{u}'@'%' IDENTIFIED BY '{p}';\n\
                 ALTER USER '{u}'@'%' IDENTIFIED BY '{p}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO '{u}'@'%' WITH GRANT OPTION;\n\
                 ALTER USER '{u}'@'localhost' IDENTIFIED BY '{p}';\n",
                u = ADMIN_USER,
                p = ADMIN_PASSWORD
            ),
        )?;
        let port = free_port()?;
        let db = MariaDb {
            port,
            dir,
            _tmp: Some(tmp),
            child: Mutex::new(None),
            extra: extra.to_vec(),
        };
        db.spawn_server()?;
        Ok(db)
    }

    fn spawn_server(&self) -> Result<()> {
        let mariadbd = find_binary("mariadbd")?;
        let dir = &self.dir;
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--init-file={}", dir.join("init.sql").display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg("--skip-name-resolve")
            .arg("--max-connections=6000")
            .arg("--max-allowed-packet=64M")
            .arg("--innodb-buffer-pool-size=128M")
            .arg("--innodb-log-file-size=64M")
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--local-infile=1")
            .arg("--thread-cache-size=64")
            .arg("--character-set-server=utf8mb4")
            .arg("--collation-server=utf8mb4_general_ci")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let child = cmd.spawn().context("starting mariadbd")?;
        let pid = child.id();
        // Watchdog: kill the server and remove its files when this process exits.
        let me = std::process::id();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null; sleep 0.5; rm -rf '{}'",
            dir.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the MariaDB watchdog")?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if TcpStream::connect(self.addr()).is_ok() {
                // The port opens before the init file has run: check the admin login.
                let ok = Command::new(find_binary("mariadb")?)
                    .args(["--no-defaults", "-h127.0.0.1", "--protocol=tcp"])
                    .arg(format!("-P{}", self.port))
                    .arg(format!("-u{ADMIN_USER}"))
                    .arg(format!("-p{ADMIN_PASSWORD}"))
                    .args(["-e", "SELECT 1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                bail!("MariaDB did not become ready in {timeout:?}; error log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Unix socket path of the server.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    pub fn admin_user(&self) -> &'static str {
        ADMIN_USER
    }

    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }

    /// `mysql://root:<pw>@127.0.0.1:<port>/`
    pub fn admin_url(&self) -> String {
        format!(
            "mysql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{}/",
            self.port
        )
    }

    /// A fresh admin connection (mysql_async).
    pub async fn admin_conn(&self) -> Result<mysql_async::Conn> {
        let opts = mysql_async::Opts::from_url(&self.admin_url())?;
        Ok(mysql_async::Conn::new(opts).await?)
    }

    /// Stops the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the server on the same port and data directory.
    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.spawn_server()
    }

    /// Runs SQL with the `mariadb` CLI as the admin user and returns stdout
    /// (tab-separated, no headers).
    pub fn cli(&self, sql: &str) -> Result<String> {
        let out = Command::new(find_binary("mariadb")?)
            .args(["--no-defaults", "-h127.0.0.1", "--protocol=tcp", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .arg(format!("-u{ADMIN_USER}"))
            .arg(format!("-p{ADMIN_PASSWORD}"))
            .args(["-e", sql])
            .output()?;
        if !out.status.success() {
            bail!(
                "mariadb CLI failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}
