//! Credential sources and generations (design D3).
//!
//! A *generation* is one set of upstream credentials (one Vault lease, or
//! the fixed static user). Every upstream connection holds a [`ConnGuard`]
//! of the generation that authenticated it, so the source knows when a
//! retired generation has no connection left and its lease can be revoked.
//! Sessions read the current generation from a `watch` channel and move to
//! a newer one at their next safe point.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};

use crate::secret::SecretString;

/// One set of upstream credentials.
pub struct Generation {
    /// Increasing number, per source.
    pub id: u64,
    /// MySQL user name (not secret: it appears in CURRENT_USER()).
    pub username: String,
    password: SecretString,
    /// Hard deadline: the credentials stop working at this instant (None =
    /// unknown or never). Learned over time (a capped renewal reveals the
    /// lease's max TTL), so it can be updated after publishing.
    deadline: std::sync::Mutex<Option<Instant>>,
    /// When this generation was obtained.
    pub issued: Instant,
    conns: AtomicUsize,
    retired: AtomicBool,
    changed: Notify,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("deadline", &self.deadline())
            .field("connections", &self.live_connections())
            .field("retired", &self.is_retired())
            .finish()
    }
}

impl Generation {
    pub fn new(
        id: u64,
        username: String,
        password: SecretString,
        deadline: Option<Instant>,
    ) -> Arc<Generation> {
        Arc::new(Generation {
            id,
            username,
            password,
            deadline: std::sync::Mutex::new(deadline),
            issued: Instant::now(),
            conns: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// Registers one upstream connection using this generation.
    pub fn attach(self: &Arc<Self>) -> ConnGuard {
        self.conns.fetch_add(1, Ordering::SeqCst);
        ConnGuard(Arc::clone(self))
    }

    pub fn live_connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Marks the generation as replaced by a newer one.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// The hard deadline, if known.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a newly learned hard deadline.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
        self.changed.notify_waiters();
    }

    /// Whether the hard deadline has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Time left before the hard deadline.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        self.deadline().map(|d| d.saturating_duration_since(now))
    }

    /// Waits until no upstream connection uses this generation.
    pub async fn wait_unused(&self) {
        loop {
            let notified = self.changed.notified();
            if self.live_connections() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by every upstream connection; dropping it releases the generation.
pub struct ConnGuard(Arc<Generation>);

impl ConnGuard {
    pub fn generation(&self) -> &Arc<Generation> {
        &self.0
    }
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnGuard(generation {})", self.0.id)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.conns.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// Something a session tells its credential source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// The upstream refused a generation's credentials (revoked out of band?).
    AuthRejected { generation: u64 },
    /// An operator asked for a new generation now.
    RotateNow,
}

/// What sessions hold: the current generation and a way to report problems.
#[derive(Clone)]
pub struct CredentialHandle {
    pub name: String,
    rx: watch::Receiver<Option<Arc<Generation>>>,
    events: mpsc::UnboundedSender<SourceEvent>,
    /// Why no generation is available (shown to clients and in /readyz).
    status: watch::Receiver<String>,
}

impl std::fmt::Debug for CredentialHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialHandle")
            .field("name", &self.name)
            .finish()
    }
}

/// The producer side of a credential source (owned by its manager task).
pub struct CredentialPublisher {
    pub tx: watch::Sender<Option<Arc<Generation>>>,
    pub events: mpsc::UnboundedReceiver<SourceEvent>,
    pub status: watch::Sender<String>,
}

impl CredentialHandle {
    /// A new source with no generation yet.
    pub fn channel(name: &str) -> (CredentialHandle, CredentialPublisher) {
        let (tx, rx) = watch::channel(None);
        let (etx, erx) = mpsc::unbounded_channel();
        let (stx, srx) = watch::channel("no credentials obtained yet".to_string());
        (
            CredentialHandle {
                name: name.to_string(),
                rx,
                events: etx,
                status: srx,
            },
            CredentialPublisher {
                tx,
                events: erx,
                status: stx,
            },
        )
    }

    /// A fixed user and password: one generation forever.
    pub fn fixed(name: &str, username: &str, password: SecretString) -> CredentialHandle {
        let (h, p) = CredentialHandle::channel(name);
        let _ = p.tx.send(Some(Generation::new(
            1,
            username.to_string(),
            password,
            None,
        )));
        // The publisher must outlive the handle's receivers: leak its halves
        // into a task that keeps them and ignores events.
        tokio::spawn(async move {
            let CredentialPublisher {
                tx,
                mut events,
                status,
            } = p;
            while events.recv().await.is_some() {}
            drop((tx, status));
        });
        h
    }

    /// The current generation, if any.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.rx.borrow().clone()
    }

    /// A receiver that wakes when a new generation is published.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Generation>>> {
        self.rx.clone()
    }

    /// Waits up to `timeout` for a usable generation.
    pub async fn wait_current(&self, timeout: Duration) -> Option<Arc<Generation>> {
        let mut rx = self.rx.clone();
        let wait = async {
            loop {
                if let Some(g) = rx.borrow_and_update().clone() {
                    if !g.expired(Instant::now()) {
                        return Some(g);
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Why there is no usable generation (for error messages).
    pub fn status(&self) -> String {
        self.status.borrow().clone()
    }

    pub fn report(&self, ev: SourceEvent) {
        let _ = self.events.send(ev);
    }
}
