//! Authentication and authorisation core: who may connect ([`Authenticator`]: password file,
//! per-listener `allow_anonymous`, certificate identity), what they may do ([`acl`]), and slowing
//! guessers ([`FailureThrottle`]). Connection-path decisions do no I/O and never show a password.

pub mod acl;
pub mod cert;
pub mod passwd_cli;
pub mod password_file;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use acl::{Access, Acl, AclError, ClientAcl, ClientIdentity};
pub use password_file::{PasswordFile, PasswordFileError};

/// A listener's authentication settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// Accept clients that send no user name (mosquitto 2.0: off unless the listener is on
    /// loopback; the config layer decides the default).
    pub allow_anonymous: bool,
    /// TLS listeners only: the verified client certificate's common name is the user name;
    /// CONNECT's user name and password are ignored and no password is needed.
    pub use_identity_as_username: bool,
}

/// What a CONNECT presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// Common name of the verified TLS client certificate, if any (see
    /// [`ListenerPolicy::use_identity_as_username`]).
    pub tls_identity: Option<&'a str>,
}

/// The decision on a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Let in, with this user name for the ACL (None: anonymous).
    Accepted { username: Option<String> },
    /// A user name and password that do not verify, or no usable certificate identity:
    /// v5 CONNACK 0x86, v3.1.1 return code 4.
    BadCredentials,
    /// Anonymous on a listener that does not allow it, or a user name on a listener with no
    /// means to check it: v5 CONNACK 0x87, v3.1.1 return code 5.
    NotAuthorized,
}

impl AuthOutcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self, AuthOutcome::Accepted { .. })
    }

    /// The MQTT 5 CONNACK reason code.
    pub fn v5_reason(&self) -> mqtt_proto::v5::ConnectReasonCode {
        use mqtt_proto::v5::ConnectReasonCode as R;
        match self {
            AuthOutcome::Accepted { .. } => R::Success,
            AuthOutcome::BadCredentials => R::BadUserNameOrPassword,
            AuthOutcome::NotAuthorized => R::NotAuthorized,
        }
    }

    /// The MQTT 3.1 / 3.1.1 CONNACK return code.
    pub fn v3_return_code(&self) -> mqtt_proto::v3::ConnectReturnCode {
        use mqtt_proto::v3::ConnectReturnCode as R;
        match self {
            AuthOutcome::Accepted { .. } => R::Accepted,
            AuthOutcome::BadCredentials => R::BadUserNameOrPassword,
            AuthOutcome::NotAuthorized => R::NotAuthorized,
        }
    }
}

impl fmt::Display for AuthOutcome {
    /// For logs: never includes a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthOutcome::Accepted { username: Some(u) } => write!(f, "accepted as user {u:?}"),
            AuthOutcome::Accepted { username: None } => f.write_str("accepted anonymously"),
            AuthOutcome::BadCredentials => f.write_str("bad user name or password"),
            AuthOutcome::NotAuthorized => f.write_str("not authorized"),
        }
    }
}

/// Checks CONNECT credentials. Cheap to clone; a reload builds a new one with the new file.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    passwords: Option<Arc<PasswordFile>>,
}

impl Authenticator {
    /// `passwords`: the `[auth] password_file`, or None when there is none.
    pub fn new(passwords: Option<Arc<PasswordFile>>) -> Authenticator {
        Authenticator { passwords }
    }

    pub fn password_file(&self) -> Option<&Arc<PasswordFile>> {
        self.passwords.as_ref()
    }

    /// True when a client on a listener with this policy has some way to get in: anonymous
    /// allowed, a password file, or certificate identities. (The config check that refuses a
    /// non-loopback listener without one uses this.)
    pub fn can_authenticate(&self, policy: &ListenerPolicy) -> bool {
        policy.allow_anonymous || policy.use_identity_as_username || self.passwords.is_some()
    }

    /// The decision for one CONNECT, as mosquitto 2.x decides it (see each branch), except
    /// that a wrong password is `BadCredentials` (mosquitto answers "not authorized").
    /// Costs one PBKDF2 (101 iterations by default) when a password is checked.
    pub fn authenticate(&self, policy: &ListenerPolicy, creds: &Credentials<'_>) -> AuthOutcome {
        if policy.use_identity_as_username {
            // CONNECT's user name and password are dropped; the certificate is the identity.
            return match creds.tls_identity {
                Some(cn) if !cn.is_empty() => AuthOutcome::Accepted {
                    username: Some(cn.to_string()),
                },
                _ => AuthOutcome::BadCredentials,
            };
        }
        let Some(user) = creds.username else {
            return if policy.allow_anonymous {
                AuthOutcome::Accepted { username: None }
            } else {
                AuthOutcome::NotAuthorized
            };
        };
        match &self.passwords {
            Some(pf) => match creds.password {
                Some(pw) if pf.verify(user, pw) => AuthOutcome::Accepted {
                    username: Some(user.to_string()),
                },
                _ => AuthOutcome::BadCredentials,
            },
            // No password file: mosquitto takes the user name unchecked where anonymous
            // clients are allowed (it then selects that user's ACL block), and refuses it
            // where they are not.
            None if policy.allow_anonymous => AuthOutcome::Accepted {
                username: Some(user.to_string()),
            },
            None => AuthOutcome::NotAuthorized,
        }
    }
}

/// Everything the `[auth]` files give, loaded together at start and on SIGHUP. A reload that
/// fails returns the error (with file and line) and the caller keeps the state it had.
#[derive(Debug, Clone, Default)]
pub struct AuthState {
    pub authenticator: Authenticator,
    /// None: no `acl_file`, every topic allowed but `$SYS` writes.
    pub acl: Option<Arc<Acl>>,
}

/// Why [`AuthState::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    #[error(transparent)]
    PasswordFile(#[from] PasswordFileError),
    #[error(transparent)]
    Acl(#[from] AclError),
}

impl AuthState {
    /// Reads the password file and ACL file (either may be absent).
    pub fn load(
        password_file: Option<&Path>,
        acl_file: Option<&Path>,
    ) -> Result<AuthState, AuthLoadError> {
        let passwords = password_file
            .map(PasswordFile::load)
            .transpose()?
            .map(Arc::new);
        let acl = acl_file.map(Acl::load).transpose()?.map(Arc::new);
        Ok(AuthState {
            authenticator: Authenticator::new(passwords),
            acl,
        })
    }

    /// The per-connection ACL view for an accepted client.
    pub fn client_acl(&self, client: &ClientIdentity<'_>) -> ClientAcl {
        ClientAcl::new(self.acl.as_deref(), client)
    }
}

/// Growing delays before CONNACK for addresses that keep failing to authenticate.
///
/// Each failure doubles the delay (from `base` up to `max`); each `forget_after` without a
/// failure takes one failure off, and a success halves the count (so one valid account cannot
/// wash away a run of guesses). The delay applies to every CONNACK for that address, accepted
/// or not, so a guesser cannot stop waiting as soon as it is not answered at once. IPv6
/// addresses count per /64, what one host usually has. The table holds at most `capacity`
/// addresses; when full, the one idle longest is dropped.
#[derive(Debug)]
pub struct FailureThrottle {
    entries: HashMap<IpAddr, Entry>,
    capacity: usize,
    base: Duration,
    max: Duration,
    forget_after: Duration,
}

/// Failures counted at most: the delay is long capped by then, and a quiet address is
/// forgotten within this many `forget_after` periods.
const MAX_FAILURES: u32 = 20;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// When `failures` was last brought up to date (failure, success or decay step).
    at: Instant,
}

impl Default for FailureThrottle {
    /// 1024 addresses, 100 ms doubling up to 10 s, one failure forgotten per minute.
    fn default() -> Self {
        FailureThrottle::new(
            1024,
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
    }
}

impl FailureThrottle {
    pub fn new(
        capacity: usize,
        base: Duration,
        max: Duration,
        forget_after: Duration,
    ) -> FailureThrottle {
        FailureThrottle {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            base,
            max,
            forget_after: forget_after.max(Duration::from_millis(1)),
        }
    }

    /// The key an address is counted under: IPv4 (also when mapped into IPv6) as is, IPv6 by
    /// its /64 prefix.
    pub fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// Failures left after time decay, without changing the table.
    fn current(&self, e: &Entry, now: Instant) -> (u32, Instant) {
        let idle = now.saturating_duration_since(e.at);
        let steps = idle.as_nanos() / self.forget_after.as_nanos();
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        let left = e.failures.saturating_sub(steps);
        // Keep the remainder of a partial step.
        let at = e.at + self.forget_after * steps.min(e.failures);
        (left, at)
    }

    fn delay_for(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = (failures - 1).min(31);
        self.base
            .checked_mul(1u32 << shift)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// How long to wait before sending this address its CONNACK.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        match self.entries.get(&Self::key(ip)) {
            Some(e) => self.delay_for(self.current(e, now).0),
            None => Duration::ZERO,
        }
    }

    /// Counts a refused CONNECT from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        let key = Self::key(ip);
        if let Some(e) = self.entries.get(&key).copied() {
            let (left, _) = self.current(&e, now);
            self.entries.insert(
                key,
                Entry {
                    failures: (left + 1).min(MAX_FAILURES),
                    at: now,
                },
            );
            return;
        }
        if self.entries.len() >= self.capacity {
            self.evict(now);
        }
        self.entries.insert(
            key,
            Entry {
                failures: 1,
                at: now,
            },
        );
    }

    /// Counts an accepted CONNECT from `ip`: halves its failures.
    pub fn record_success(&mut self, ip: IpAddr, now: Instant) {
        let key = Self::key(ip);
        if let Some(e) = self.entries.get(&key).copied() {
            let (left, at) = self.current(&e, now);
            let left = left / 2;
            if left == 0 {
                self.entries.remove(&key);
            } else {
                self.entries.insert(key, Entry { failures: left, at });
            }
        }
    }

    /// Drops entries fully forgotten; if none, the one idle longest.
    fn evict(&mut self, now: Instant) {
        let before = self.entries.len();
        let forget = self.forget_after;
        self.entries.retain(|_, e| {
            let idle = now.saturating_duration_since(e.at);
            idle.as_nanos() / forget.as_nanos() < u128::from(e.failures)
        });
        if self.entries.len() < before {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.at)
            .map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
    }

    /// Addresses currently tracked (at most the capacity).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
