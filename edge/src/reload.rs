//! SIGHUP: the configuration file is read again and what can change live is put in force
//! (`log.level`, the limits in `live_limits`, `[auth]` files, TLS files); every changed setting
//! is logged (old -> new), those that need a restart with a warning, and keep their running
//! value. A file that no longer parses changes nothing. A file (password, ACL, certificate)
//! that fails to load keeps its old state; connections stay up throughout.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use crate::auth::AuthState;
use crate::broker::Broker;
use crate::config::Config;
use crate::error::{Error, Result};

/// A TLS listener's acceptor, replaced in place on reload.
pub type SharedAcceptor = Arc<RwLock<futures_rustls::TlsAcceptor>>;

/// Reads the `[auth]` files; errors name the file and line.
pub fn load_auth(cfg: &Config) -> Result<AuthState> {
    let state = AuthState::load(
        cfg.auth.password_file.as_deref(),
        cfg.auth.acl_file.as_deref(),
    )
    .map_err(|e| Error::Config {
        origin: "[auth]".into(),
        message: e.to_string(),
    })?;
    if let Some(acl) = &state.acl {
        for w in acl.warnings() {
            tracing::warn!(file = %acl.path().display(), "{w}");
        }
    }
    tracing::info!(
        password_file = ?cfg.auth.password_file,
        acl_file = ?cfg.auth.acl_file,
        acl_rules = state.acl.as_ref().map_or(0, |a| a.rule_count()),
        "access control loaded"
    );
    Ok(state)
}

/// Where a reload gets the configuration and how it changes the log level: given by the
/// binary, which knows the file, the command line's overrides and the log subscriber.
pub struct ReloadSource {
    /// Reads the configuration again (file and command-line overrides), validated.
    pub load: Box<dyn Fn() -> Result<Config> + Send + Sync>,
    /// Puts a new `log.level` filter in force; the error says why it could not.
    pub set_log_level: SetLogLevel,
}

/// Changes the log filter; the error says why it could not.
pub type SetLogLevel = Box<dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync>;

impl ReloadSource {
    /// For a broker without a file: the same configuration each time (only the `[auth]` and
    /// TLS files are re-read) and a log level that cannot change.
    pub fn fixed(cfg: Config) -> ReloadSource {
        ReloadSource {
            load: Box::new(move || Ok(cfg.clone())),
            set_log_level: Box::new(|_| Err("no reloadable log subscriber".into())),
        }
    }
}

/// Whether a setting takes a new value while serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Live,
    Restart,
}

/// One setting that differs between the running configuration and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
    pub apply: Apply,
}

fn cmp<T: PartialEq + Debug>(out: &mut Vec<Change>, key: &str, old: &T, new: &T, apply: Apply) {
    if old != new {
        out.push(Change {
            key: key.into(),
            old: format!("{old:?}"),
            new: format!("{new:?}"),
            apply,
        });
    }
}

/// Every setting that differs, named by its key, and whether it can change live.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    use Apply::{Live, Restart};
    let mut out = Vec::new();
    let c = &mut out;
    cmp(c, "log.level", &old.log.level, &new.log.level, Live);
    let (o, n) = (&old.limits, &new.limits);
    macro_rules! limit {
        ($($f:ident: $a:expr),* $(,)?) => {$(
            cmp(c, concat!("limits.", stringify!($f)), &o.$f, &n.$f, $a);
        )*};
    }
    limit!(
        max_connections: Live,
        max_connections_per_ip: Live,
        connect_timeout_secs: Live,
        max_queued_messages: Live,
        max_queued_bytes: Live,
        max_retained_messages: Live,
        max_subscriptions_per_session: Live,
        // New connections only: a connection keeps the value its CONNACK told.
        max_packet_size: Live,
        // Told to the client at CONNACK or fixed per connection: restart.
        receive_maximum: Restart,
        max_inflight: Restart,
        max_session_expiry_secs: Restart,
        max_keep_alive_secs: Restart,
        topic_alias_maximum: Restart,
        max_topic_length: Restart,
        max_topic_levels: Restart,
    );
    cmp(
        c,
        "auth.password_file",
        &old.auth.password_file,
        &new.auth.password_file,
        Live,
    );
    cmp(
        c,
        "auth.acl_file",
        &old.auth.acl_file,
        &new.auth.acl_file,
        Live,
    );
    if old.listeners.len() != new.listeners.len() {
        cmp(c, "listeners", &old.listeners, &new.listeners, Restart);
    } else {
        for (i, (o, n)) in old.listeners.iter().zip(&new.listeners).enumerate() {
            let key = |k: &str| format!("listeners[{i}].{k}");
            cmp(c, &key("bind"), &o.bind, &n.bind, Restart);
            cmp(
                c,
                &key("allow_anonymous"),
                &o.allow_anonymous,
                &n.allow_anonymous,
                Restart,
            );
            cmp(c, &key("kind"), &o.kind, &n.kind, Restart);
            cmp(
                c,
                &key("websocket_path"),
                &o.websocket_path,
                &n.websocket_path,
                Restart,
            );
            cmp(
                c,
                &key("trusted_proxies"),
                &o.trusted_proxies,
                &n.trusted_proxies,
                Restart,
            );
            cmp(
                c,
                &key("proxy_protocol"),
                &o.proxy_protocol,
                &n.proxy_protocol,
                Restart,
            );
            match (&o.tls, &n.tls) {
                (Some(ot), Some(nt)) => {
                    cmp(c, &key("tls.cert_file"), &ot.cert_file, &nt.cert_file, Live);
                    cmp(c, &key("tls.key_file"), &ot.key_file, &nt.key_file, Live);
                    cmp(
                        c,
                        &key("tls.client_ca_file"),
                        &ot.client_ca_file,
                        &nt.client_ca_file,
                        Live,
                    );
                    cmp(
                        c,
                        &key("tls.use_identity_as_username"),
                        &ot.use_identity_as_username,
                        &nt.use_identity_as_username,
                        Restart,
                    );
                }
                (ot, nt) => cmp(c, &key("tls"), ot, nt, Restart),
            }
        }
    }
    cmp(c, "data_dir", &old.data_dir, &new.data_dir, Restart);
    cmp(c, "durability", &old.durability, &new.durability, Restart);
    cmp(
        c,
        "worker_threads",
        &old.worker_threads,
        &new.worker_threads,
        Restart,
    );
    cmp(
        c,
        "storage.cache_size_bytes",
        &old.storage.cache_size_bytes,
        &new.storage.cache_size_bytes,
        Restart,
    );
    cmp(
        c,
        "storage.max_batch",
        &old.storage.max_batch,
        &new.storage.max_batch,
        Restart,
    );
    cmp(
        c,
        "storage.journal_bytes",
        &old.storage.journal_bytes,
        &new.storage.journal_bytes,
        Restart,
    );
    cmp(
        c,
        "storage.on_damaged",
        &old.storage.on_damaged,
        &new.storage.on_damaged,
        Restart,
    );
    if old.sync != new.sync {
        // The whole table: its rules and link are set up once, at start.
        c.push(Change {
            key: "sync".into(),
            old: if old.sync.is_some() {
                "(a [sync] table)"
            } else {
                "(none)"
            }
            .into(),
            new: if new.sync.is_some() {
                "(a changed [sync] table)"
            } else {
                "(none)"
            }
            .into(),
            apply: Restart,
        });
    }
    out
}

/// The SIGHUP handler's state: where the configuration comes from and what is in force.
pub struct Reloader {
    source: ReloadSource,
    /// The configuration in force: the start one with every live change applied since.
    current: Config,
    acceptors: Vec<Option<SharedAcceptor>>,
    /// The operations listener's HTTPS acceptor (`[http.tls]`), when it runs with TLS.
    http_tls: Option<SharedAcceptor>,
}

impl Reloader {
    pub fn new(
        source: ReloadSource,
        current: Config,
        acceptors: Vec<Option<SharedAcceptor>>,
    ) -> Self {
        Reloader {
            source,
            current,
            acceptors,
            http_tls: None,
        }
    }

    /// Also re-reads `[http.tls]` on SIGHUP, into this acceptor.
    pub fn with_http_tls(mut self, http_tls: Option<SharedAcceptor>) -> Self {
        self.http_tls = http_tls;
        self
    }

    /// The configuration in force.
    pub fn current(&self) -> &Config {
        &self.current
    }

    /// Reads the configuration again and puts what can change live in force; logs every
    /// change. Returns the changes found (none when the file could not be read).
    pub fn reload(&mut self, broker: &Broker) -> Vec<Change> {
        tracing::info!("reload: reading the configuration again");
        let new = match (self.source.load)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload: configuration not reloaded, everything stays as it is");
                return Vec::new();
            }
        };
        let found = changes(&self.current, &new);
        let mut next = self.current.clone();
        for ch in &found {
            match ch.apply {
                Apply::Live => tracing::info!(setting = %ch.key, old = %ch.old, new = %ch.new,
                    "reload: {} changed: {} -> {}", ch.key, ch.old, ch.new),
                Apply::Restart => tracing::warn!(setting = %ch.key, old = %ch.old, new = %ch.new,
                    "reload: {} changed ({} -> {}) but needs a restart; the running value stays",
                    ch.key, ch.old, ch.new),
            }
        }
        if new.log.level != self.current.log.level {
            match (self.source.set_log_level)(&new.log.level) {
                Ok(()) => next.log.level = new.log.level.clone(),
                Err(e) => tracing::error!(error = %e, "reload: log.level not changed"),
            }
        }
        broker.connections.set_max(new.limits.max_connections);
        broker.live.apply(&new.limits);
        let (l, n) = (&mut next.limits, &new.limits);
        l.max_connections = n.max_connections;
        l.max_connections_per_ip = n.max_connections_per_ip;
        l.connect_timeout_secs = n.connect_timeout_secs;
        l.max_queued_messages = n.max_queued_messages;
        l.max_queued_bytes = n.max_queued_bytes;
        l.max_retained_messages = n.max_retained_messages;
        l.max_subscriptions_per_session = n.max_subscriptions_per_session;
        l.max_packet_size = n.max_packet_size;
        next.auth = new.auth.clone();
        if next.listeners.len() == new.listeners.len() {
            for (l, n) in next.listeners.iter_mut().zip(&new.listeners) {
                if let (Some(lt), Some(nt)) = (&mut l.tls, &n.tls) {
                    lt.cert_file = nt.cert_file.clone();
                    lt.key_file = nt.key_file.clone();
                    lt.client_ca_file = nt.client_ca_file.clone();
                }
            }
        }
        self.current = next;
        reload_files(broker, &self.current, &self.acceptors);
        reload_http_tls(&self.current, self.http_tls.as_ref());
        tracing::info!(changed = found.len(), "reload done");
        found
    }
}

/// Re-reads the `[auth]` files and every TLS listener's certificate and key. Whatever fails to
/// load keeps its current state (and is logged); the rest is put in force.
pub fn reload_files(broker: &Broker, cfg: &Config, acceptors: &[Option<SharedAcceptor>]) {
    tracing::info!("reloading password file, ACL file and TLS certificates");
    let current = broker.auth();
    // The two files are read apart, so that a broken ACL does not hold back a password change.
    let passwords = AuthState::load(cfg.auth.password_file.as_deref(), None);
    let acl = AuthState::load(None, cfg.auth.acl_file.as_deref());
    let mut next = (*current).clone();
    match passwords {
        Ok(p) => next.authenticator = p.authenticator,
        Err(e) => {
            tracing::error!(error = %e, "reload: password file not reloaded, the previous one stays in force")
        }
    }
    match acl {
        Ok(a) => next.acl = a.acl,
        Err(e) => {
            tracing::error!(error = %e, "reload: ACL file not reloaded, the previous one stays in force")
        }
    }
    broker.set_auth(next);
    for (i, (l, shared)) in cfg.listeners.iter().zip(acceptors).enumerate() {
        let (Some(tls), Some(shared)) = (&l.tls, shared) else {
            continue;
        };
        match crate::transport::acceptor(tls, &format!("listeners[{i}].tls")) {
            Ok(a) => *shared.write().unwrap_or_else(|e| e.into_inner()) = a,
            Err(e) => {
                tracing::error!(error = %e, "reload: TLS certificate not reloaded, the previous one stays in force")
            }
        }
    }
}

/// Re-reads the operations listener's `[http.tls]` files; on an error the previous certificate
/// stays in force (and the error is logged, naming the key).
pub fn reload_http_tls(cfg: &Config, shared: Option<&SharedAcceptor>) {
    let (Some(tls), Some(shared)) = (&cfg.http.tls, shared) else {
        return;
    };
    match crate::transport::acceptor(tls, "http.tls") {
        Ok(a) => {
            *shared.write().unwrap_or_else(|e| e.into_inner()) = a;
            tracing::info!("reload: HTTPS certificate of the operations listener re-read");
        }
        Err(e) => {
            tracing::error!(error = %e, "reload: HTTPS certificate not reloaded, the previous one stays in force")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;
    use std::sync::Mutex;

    fn changed(cfg: &Config, edit: impl FnOnce(&mut Config)) -> Config {
        let mut c = cfg.clone();
        edit(&mut c);
        c
    }

    /// The keys of the changes from `old` to `new`, with how each applies.
    fn keys(old: &Config, new: &Config) -> Vec<(String, Apply)> {
        changes(old, new)
            .into_iter()
            .map(|c| (c.key, c.apply))
            .collect()
    }

    #[test]
    fn live_settings_and_restart_only_settings_are_told_apart_by_key() {
        let old = Config::default();
        let new = changed(&old, |c| {
            c.log.level = "debug".into();
            c.limits.max_connections = 5;
            c.limits.receive_maximum = 10;
            c.storage.max_batch = 7;
            c.durability = crate::config::Durability::None;
        });
        assert_eq!(
            keys(&old, &new),
            vec![
                ("log.level".into(), Apply::Live),
                ("limits.max_connections".into(), Apply::Live),
                ("limits.receive_maximum".into(), Apply::Restart),
                ("durability".into(), Apply::Restart),
                ("storage.max_batch".into(), Apply::Restart),
            ]
        );
        let c = &changes(&old, &new)[1];
        assert_eq!((c.old.as_str(), c.new.as_str()), ("10000", "5"));
        assert!(changes(&old, &old.clone()).is_empty());
    }

    #[test]
    fn a_listener_s_kind_path_proxies_and_proxy_protocol_are_reported_as_needing_a_restart() {
        let old = Config::default();
        let new = changed(&old, |c| {
            let l = &mut c.listeners[0];
            l.kind = crate::config::ListenerKind::Websocket;
            l.websocket_path = Some("/ws".into());
            l.trusted_proxies = vec!["10.0.0.0/8".parse().expect("range")];
            l.proxy_protocol = true;
        });
        assert_eq!(
            keys(&old, &new),
            vec![
                ("listeners[0].kind".into(), Apply::Restart),
                ("listeners[0].websocket_path".into(), Apply::Restart),
                ("listeners[0].trusted_proxies".into(), Apply::Restart),
                ("listeners[0].proxy_protocol".into(), Apply::Restart),
            ]
        );
    }

    #[test]
    fn reload_applies_live_limits_keeps_restart_values_and_ignores_a_broken_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let start = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let (store, loaded) = Store::open(&start).expect("open store");
        let broker = Broker::new(Arc::new(start.clone()), store, loaded);
        let next: Arc<Mutex<Result<Config>>> = Arc::new(Mutex::new(Ok(changed(&start, |c| {
            c.limits.max_connections = 3;
            c.limits.max_queued_messages = 9;
            c.log.level = "debug".into();
            c.storage.max_batch = 7;
        }))));
        let levels = Arc::new(Mutex::new(Vec::<String>::new()));
        let (n, l) = (next.clone(), levels.clone());
        let source = ReloadSource {
            load: Box::new(
                move || match &*n.lock().unwrap_or_else(|e| e.into_inner()) {
                    Ok(c) => Ok(c.clone()),
                    Err(e) => Err(Error::Config {
                        origin: "test".into(),
                        message: e.to_string(),
                    }),
                },
            ),
            set_log_level: Box::new(move |level| {
                l.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(level.into());
                Ok(())
            }),
        };
        let mut r = Reloader::new(source, start.clone(), vec![None]);
        let found = r.reload(&broker);
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(broker.connections.max(), 3);
        assert_eq!(broker.live.max_queued_messages(), 9);
        assert_eq!(
            *levels.lock().unwrap_or_else(|e| e.into_inner()),
            vec!["debug"]
        );
        assert_eq!(
            r.current().storage.max_batch,
            start.storage.max_batch,
            "restart-only stays"
        );
        assert_eq!(r.current().limits.max_connections, 3);

        *next.lock().unwrap_or_else(|e| e.into_inner()) = Err(Error::Config {
            origin: "edge.toml".into(),
            message: "unknown field `max_conections` (key `limits.max_conections`)".into(),
        });
        assert!(
            r.reload(&broker).is_empty(),
            "a broken file changes nothing"
        );
        assert_eq!(broker.connections.max(), 3);
        assert_eq!(r.current().limits.max_connections, 3);
    }
}
