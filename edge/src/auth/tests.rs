//! Unit tests of `auth` (kept apart so that the module stays under 600 lines).

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

/// Records `times` failed logins of `addr` at `at`.
fn fail(t: &mut FailureThrottle, addr: IpAddr, times: usize, at: Instant) {
    for _ in 0..times {
        t.record_failure(addr, at);
    }
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
    fail(&mut t, ip(1), 100, now);
    assert_eq!(t.delay(ip(1), now), Duration::from_secs(10));
    // Counting stops at 20 failures, so 20 quiet minutes forget even a long attack.
    let later = now + Duration::from_secs(20 * 60);
    assert_eq!(t.delay(ip(1), later), Duration::ZERO);
}

#[test]
fn throttle_forgets_one_failure_per_quiet_period() {
    let mut t = throttle();
    let t0 = Instant::now();
    fail(&mut t, ip(1), 3, t0);
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
    fail(&mut t, ip(1), 6, now);
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
        fail(&mut t, ip(n), 5, t0);
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
