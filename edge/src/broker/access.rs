//! The broker's side of access control: the current `[auth]` state (swapped whole on SIGHUP),
//! the failure throttle, per-address connection counts, and the per-session read ACL used when
//! routing. Per-message checks use a resolved [`ClientAcl`] and never allocate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::Broker;
use crate::auth::{Acl, AuthState, ClientAcl, ClientIdentity, FailureThrottle};

/// Shared access-control state, one per broker.
#[derive(Debug, Default)]
pub struct AccessState {
    state: RwLock<Arc<AuthState>>,
    /// The generation of the current ACL (0: none); connections compare theirs to it.
    generation: AtomicU64,
    pub(super) throttle: Mutex<FailureThrottle>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// An ACL without rules: what a session whose user is not known yet (restored from disk,
    /// not reconnected) may read when an ACL file is in force. Nothing.
    nobody: Mutex<Option<Arc<Acl>>>,
}

/// One connection's place under `limits.max_connections_per_ip`, freed on drop, or handed
/// over to a holder that frees it with [`Broker::release_ip`].
#[derive(Debug)]
pub struct IpPermit {
    ip: IpAddr,
    /// None once handed over.
    table: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl IpPermit {
    /// The holder now frees the place itself, with [`Broker::release_ip`] and the same
    /// address (an accepted connection's block knows its peer: 32 bytes less per connection).
    pub fn hand_over(mut self) {
        self.table = None;
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let Some(table) = &self.table {
            release_ip(table, self.ip);
        }
    }
}

/// Gives back one place of `key` (a [`FailureThrottle::key`]).
fn release_ip(table: &Mutex<HashMap<IpAddr, usize>>, key: IpAddr) {
    let mut t = edge_mqtt::util::lock(table);
    if let Some(n) = t.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            t.remove(&key);
        }
    }
}

impl Broker {
    /// The current password file and ACL.
    pub fn auth(&self) -> Arc<AuthState> {
        self.access
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of the ACL in force (0: no ACL file).
    pub fn acl_generation(&self) -> u64 {
        self.access.generation.load(Ordering::Acquire)
    }

    /// Puts `state` in force: new connections authenticate against it, live connections pick
    /// up its ACL at their next check, and every session's read ACL is rebuilt now.
    pub fn set_auth(&self, state: AuthState) {
        let state = Arc::new(state);
        let nobody = state
            .acl
            .as_ref()
            .and_then(|_| Acl::parse("", Path::new("(user not known yet)")).ok())
            .map(Arc::new);
        *self.access.state.write().unwrap_or_else(|e| e.into_inner()) = state.clone();
        *edge_mqtt::util::lock(&self.access.nobody) = nobody.clone();
        self.access.generation.store(
            state.acl.as_ref().map_or(0, |a| a.generation()),
            Ordering::Release,
        );
        let mut st = self.lock();
        for s in st.sessions.values_mut() {
            let acl = match s.identity() {
                Some(user) => state.client_acl(&ClientIdentity {
                    username: user.as_deref(),
                    client_id: s.client_id(),
                }),
                None => ClientAcl::new(nobody.as_deref(), &unknown(s.client_id())),
            };
            s.set_read_acl(acl);
        }
    }

    /// How long to hold back the CONNACK for `ip` (failed authentications before).
    pub fn auth_delay(&self, ip: IpAddr) -> Duration {
        edge_mqtt::util::lock(&self.access.throttle).delay(ip, Instant::now())
    }

    /// Records the result of an authentication from `ip`.
    pub fn auth_result(&self, ip: IpAddr, ok: bool) {
        let mut t = edge_mqtt::util::lock(&self.access.throttle);
        if ok {
            t.record_success(ip, Instant::now());
        } else {
            t.record_failure(ip, Instant::now());
        }
    }

    /// A place under `limits.max_connections_per_ip`, or None when `ip` has them all.
    pub fn try_acquire_ip(&self, ip: IpAddr) -> Option<IpPermit> {
        let key = FailureThrottle::key(ip);
        let max = self.live.max_connections_per_ip();
        let mut t = edge_mqtt::util::lock(&self.access.per_ip);
        let n = t.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpPermit {
            ip: key,
            table: Some(self.access.per_ip.clone()),
        })
    }

    /// Frees the place of an [`IpPermit`] taken for `ip` and handed over.
    pub fn release_ip(&self, ip: IpAddr) {
        release_ip(&self.access.per_ip, FailureThrottle::key(ip));
    }
}

fn unknown(client_id: &str) -> ClientIdentity<'_> {
    ClientIdentity {
        username: None,
        client_id,
    }
}
