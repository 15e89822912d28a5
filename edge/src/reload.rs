//! `[auth]` files and TLS certificates, loaded at start and re-read on SIGHUP. A reload that
//! fails for one file keeps that file's old state and logs the error with file and line;
//! connections stay up and pick up the new ACL at their next check.

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

/// Re-reads the `[auth]` files and every TLS listener's certificate and key. Whatever fails to
/// load keeps its current state (and is logged); the rest is put in force.
pub fn reload(broker: &Broker, acceptors: &[Option<SharedAcceptor>]) {
    tracing::info!("reloading password file, ACL file and TLS certificates");
    let cfg = &broker.cfg;
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
    tracing::info!("reload done");
}
