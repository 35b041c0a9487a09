//! A credential source driven by the test: every generation is a MySQL user
//! the test creates (what a Vault lease is to MariaDB); retired generations
//! nobody uses any more can be dropped (what revoking the lease does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlease::credentials::{CredentialHandle, CredentialPublisher, Generation, SourceEvent};
use sqlease::secret::SecretString;

use super::MariaDb;

pub struct Rotator {
    db: &'static MariaDb,
    publisher: Mutex<CredentialPublisher>,
    next: AtomicU64,
    prefix: String,
    pub gens: Mutex<Vec<Arc<Generation>>>,
}

impl Rotator {
    /// A source with no generation yet, and the handle to give sqlease (named
    /// "static", the credential source `config_toml` refers to).
    pub fn new(db: &'static MariaDb, prefix: &str) -> (Arc<Rotator>, CredentialHandle) {
        let (h, p) = CredentialHandle::channel("static");
        (
            Arc::new(Rotator {
                db,
                publisher: Mutex::new(p),
                next: AtomicU64::new(1),
                prefix: prefix.to_string(),
                gens: Default::default(),
            }),
            h,
        )
    }

    /// Creates a MySQL user and publishes it as the next generation.
    pub fn rotate(&self, deadline: Option<Duration>) -> Arc<Generation> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let user = format!("{}{n}", self.prefix);
        let pw = format!("pw-{n}-x");
        self.db
            .cli(&format!(
                "CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}'; GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%';"
            ))
            .unwrap();
        let g = Generation::new(
            n,
            user,
            SecretString::from(pw),
            deadline.map(|d| Instant::now() + d),
        );
        let mut gens = self.gens.lock().unwrap();
        if let Some(old) = gens.last() {
            old.retire();
        }
        gens.push(Arc::clone(&g));
        self.publisher
            .lock()
            .unwrap()
            .tx
            .send(Some(Arc::clone(&g)))
            .unwrap();
        g
    }

    /// The events sessions and the admin listener sent to this source.
    pub fn events(&self) -> Vec<SourceEvent> {
        let mut p = self.publisher.lock().unwrap();
        let mut out = Vec::new();
        while let Ok(e) = p.events.try_recv() {
            out.push(e);
        }
        out
    }

    /// Number of generations published so far.
    pub fn rotations(&self) -> u64 {
        self.next.load(Ordering::SeqCst) - 1
    }

    /// The users of this source that exist in mysql.user.
    pub fn users_in_mysql(&self) -> Vec<String> {
        self.db
            .cli(&format!(
                "SELECT user FROM mysql.user WHERE user LIKE '{}%' ORDER BY user",
                self.prefix
            ))
            .unwrap()
            .lines()
            .map(|s| s.to_string())
            .collect()
    }

    /// Drops the users of retired generations no connection uses any more;
    /// returns how many.
    pub fn drop_unused(&self) -> usize {
        let mut gens = self.gens.lock().unwrap();
        let mut n = 0;
        gens.retain(|g| {
            if g.is_retired() && g.live_connections() == 0 {
                self.db
                    .cli(&format!("DROP USER IF EXISTS '{}'@'%'", g.username))
                    .unwrap();
                n += 1;
                false
            } else {
                true
            }
        });
        n
    }
}
