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
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const FIXTURE: &str = include_str!("../../tests/fixtures/mosquitto_passwd.txt");

    fn auth() -> Authenticator {
        let pf = PasswordFile::parse(FIXTURE.as_bytes(), Path::new("fixture")).unwrap();
        Authenticator::new(Some(Arc::new(pf)))
    }

    const OPEN: ListenerPolicy = ListenerPolicy {
        allow_anonymous: true,
        use_identity_as_username: false,
    };
    const CLOSED: ListenerPolicy = ListenerPolicy {
        allow_anonymous: false,
        use_identity_as_username: false,
    };
    const CERT: ListenerPolicy = ListenerPolicy {
        allow_anonymous: false,
        use_identity_as_username: true,
    };

    fn creds<'a>(u: Option<&'a str>, p: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            username: u,
            password: p,
            tls_identity: None,
        }
    }

    #[test]
    fn right_password_is_accepted_with_the_user_name() {
        let out = auth().authenticate(&CLOSED, &creds(Some("alice"), Some(b"alice-secret")));
        assert_eq!(
            out,
            AuthOutcome::Accepted {
                username: Some("alice".into())
            }
        );
    }

    #[test]
    fn wrong_or_missing_password_and_unknown_user_are_bad_credentials() {
        let a = auth();
        for c in [
            creds(Some("alice"), Some(b"nope")),
            creds(Some("alice"), None),
            creds(Some("mallory"), Some(b"alice-secret")),
        ] {
            // Even where anonymous clients are welcome, a user name is checked.
            assert_eq!(a.authenticate(&OPEN, &c), AuthOutcome::BadCredentials);
            assert_eq!(a.authenticate(&CLOSED, &c), AuthOutcome::BadCredentials);
        }
    }

    #[test]
    fn anonymous_follows_the_listeners_allow_anonymous() {
        let a = auth();
        assert_eq!(
            a.authenticate(&OPEN, &creds(None, None)),
            AuthOutcome::Accepted { username: None }
        );
        assert_eq!(
            a.authenticate(&CLOSED, &creds(None, None)),
            AuthOutcome::NotAuthorized
        );
        // A password without a user name (MQTT 5 allows it) does not make a user.
        assert_eq!(
            a.authenticate(&CLOSED, &creds(None, Some(b"alice-secret"))),
            AuthOutcome::NotAuthorized
        );
    }

    #[test]
    fn without_a_password_file_user_names_are_taken_only_where_anonymous_is_allowed() {
        let a = Authenticator::new(None);
        assert_eq!(
            a.authenticate(&OPEN, &creds(Some("bob"), Some(b"x"))),
            AuthOutcome::Accepted {
                username: Some("bob".into())
            }
        );
        assert_eq!(
            a.authenticate(&CLOSED, &creds(Some("bob"), Some(b"x"))),
            AuthOutcome::NotAuthorized
        );
        assert!(!a.can_authenticate(&CLOSED));
        assert!(a.can_authenticate(&CERT));
        assert!(auth().can_authenticate(&CLOSED));
    }

    #[test]
    fn certificate_identity_becomes_the_user_name_without_a_password() {
        let a = auth();
        let c = Credentials {
            username: Some("alice"),
            password: Some(b"wrong"),
            tls_identity: Some("sensor-17"),
        };
        assert_eq!(
            a.authenticate(&CERT, &c),
            AuthOutcome::Accepted {
                username: Some("sensor-17".into())
            }
        );
        let no_cert = creds(Some("alice"), Some(b"alice-secret"));
        assert_eq!(a.authenticate(&CERT, &no_cert), AuthOutcome::BadCredentials);
    }

    #[test]
    fn outcomes_map_to_connack_codes() {
        let bad = AuthOutcome::BadCredentials;
        let na = AuthOutcome::NotAuthorized;
        let ok = AuthOutcome::Accepted { username: None };
        assert_eq!(bad.v5_reason() as u8, 0x86);
        assert_eq!(na.v5_reason() as u8, 0x87);
        assert_eq!(ok.v5_reason() as u8, 0x00);
        assert_eq!(bad.v3_return_code() as u8, 4);
        assert_eq!(na.v3_return_code() as u8, 5);
        assert_eq!(ok.v3_return_code() as u8, 0);
        assert!(!bad.to_string().contains("secret"));
    }

    #[test]
    fn shared_types_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<AuthState>();
        send_sync::<Authenticator>();
        send_sync::<Acl>();
        send_sync::<ClientAcl>();
        send_sync::<FailureThrottle>();
    }

    #[test]
    fn auth_state_loads_both_files_and_reports_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        let acl = dir.path().join("acl");
        std::fs::write(&pw, FIXTURE).unwrap();
        std::fs::write(&acl, "user alice\ntopic readwrite home/#\n").unwrap();
        let st = AuthState::load(Some(&pw), Some(&acl)).unwrap();
        let out = st
            .authenticator
            .authenticate(&CLOSED, &creds(Some("alice"), Some(b"alice-secret")));
        assert!(out.is_accepted());
        let view = st.client_acl(&ClientIdentity {
            username: Some("alice"),
            client_id: "c",
        });
        assert!(view.check("home/x", Access::Write));
        assert!(!view.check("work/x", Access::Write));

        std::fs::write(&acl, "user alice\ntopic readwrite home/#\ntopic bogus x\n").unwrap();
        let e = AuthState::load(Some(&pw), Some(&acl)).unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let none = AuthState::load(None, None).unwrap();
        assert!(none.acl.is_none() && none.authenticator.password_file().is_none());
        assert!(none
            .client_acl(&ClientIdentity {
                username: None,
                client_id: "c"
            })
            .check("x", Access::Write));
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    fn throttle() -> FailureThrottle {
        FailureThrottle::new(
            4,
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn throttle_delay_doubles_per_failure_up_to_the_cap() {
        let mut t = throttle();
        let now = Instant::now();
        assert_eq!(t.delay(ip(1), now), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..10 {
            t.record_failure(ip(1), now);
            seen.push(t.delay(ip(1), now).as_millis());
        }
        assert_eq!(
            seen,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        assert_eq!(
            t.delay(ip(2), now),
            Duration::ZERO,
            "other addresses unaffected"
        );
        for _ in 0..100 {
            t.record_failure(ip(1), now);
        }
        assert_eq!(t.delay(ip(1), now), Duration::from_secs(10));
        // Counting stops at 20 failures, so 20 quiet minutes forget even a long attack.
        let later = now + Duration::from_secs(20 * 60);
        assert_eq!(t.delay(ip(1), later), Duration::ZERO);
    }

    #[test]
    fn throttle_forgets_one_failure_per_quiet_period() {
        let mut t = throttle();
        let t0 = Instant::now();
        for _ in 0..3 {
            t.record_failure(ip(1), t0);
        }
        assert_eq!(t.delay(ip(1), t0), Duration::from_millis(400));
        assert_eq!(
            t.delay(ip(1), t0 + Duration::from_secs(61)),
            Duration::from_millis(200)
        );
        assert_eq!(
            t.delay(ip(1), t0 + Duration::from_secs(180)),
            Duration::ZERO
        );
        // A failure after some decay continues from what is left.
        t.record_failure(ip(1), t0 + Duration::from_secs(125));
        assert_eq!(
            t.delay(ip(1), t0 + Duration::from_secs(125)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn throttle_success_halves_failures_rather_than_clearing_them() {
        let mut t = throttle();
        let now = Instant::now();
        for _ in 0..6 {
            t.record_failure(ip(1), now);
        }
        t.record_success(ip(1), now);
        assert_eq!(t.delay(ip(1), now), Duration::from_millis(400));
        t.record_success(ip(1), now);
        t.record_success(ip(1), now);
        assert_eq!(t.delay(ip(1), now), Duration::ZERO);
        assert!(t.is_empty(), "a clean address leaves the table");
        t.record_success(ip(9), now);
        assert!(t.is_empty(), "successes alone add nothing");
    }

    #[test]
    fn throttle_table_is_bounded_and_evicts_the_longest_idle() {
        let mut t = throttle();
        let t0 = Instant::now();
        for n in 1..=4u8 {
            t.record_failure(ip(n), t0 + Duration::from_millis(u64::from(n)));
        }
        t.record_failure(ip(1), t0 + Duration::from_millis(10));
        t.record_failure(ip(5), t0 + Duration::from_millis(11));
        assert_eq!(t.len(), 4);
        let now = t0 + Duration::from_millis(12);
        assert_eq!(t.delay(ip(2), now), Duration::ZERO, "oldest idle evicted");
        assert_eq!(t.delay(ip(1), now), Duration::from_millis(200));
        assert_eq!(t.delay(ip(5), now), Duration::from_millis(100));
        for n in 0..=255u8 {
            t.record_failure(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), now);
        }
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn throttle_eviction_prefers_fully_forgotten_entries() {
        let mut t = throttle();
        let t0 = Instant::now();
        for n in 2..=4u8 {
            for _ in 0..5 {
                t.record_failure(ip(n), t0);
            }
        }
        // More recent than the others, but with one failure it is forgotten after 60 s.
        t.record_failure(ip(1), t0 + Duration::from_secs(30));
        let now = t0 + Duration::from_secs(95);
        t.record_failure(ip(5), now);
        assert_eq!(t.len(), 4);
        assert_eq!(t.delay(ip(1), now), Duration::ZERO);
        assert_eq!(
            t.delay(ip(2), now),
            Duration::from_millis(800),
            "oldest kept"
        );
    }

    #[test]
    fn throttle_counts_ipv6_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = throttle();
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        t.record_failure(a, now);
        t.record_failure(b, now);
        assert_eq!(t.delay(a, now), Duration::from_millis(200));
        assert_eq!(t.delay(other, now), Duration::ZERO);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        t.record_failure(mapped, now);
        assert_eq!(t.delay(ip(7), now), Duration::from_millis(100));
        let _ = Ipv6Addr::LOCALHOST;
    }
}
