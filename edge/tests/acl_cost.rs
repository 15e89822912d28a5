//! The per-message ACL check is on the publish and delivery paths: it must not allocate, and
//! with a 100-rule ACL it must stay cheap. A counting allocator proves the first; the second is
//! printed (run with `--nocapture`, in release for meaningful numbers), not asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use robustmq_edge::auth::acl::{Access, Acl, ClientIdentity};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A store-like ACL of 100 rules: 30 sensors writing under their own name, apps reading,
/// some denies, and patterns.
fn hundred_rule_acl() -> String {
    let mut s = String::from(
        "topic read public/#\ntopic deny public/internal/#\ntopic read $SYS/broker/uptime\ntopic deny public/secret\n",
    );
    for i in 0..30 {
        s.push_str(&format!(
            "user sensor{i}\ntopic write store/sensors/sensor{i}/#\n"
        ));
    }
    s.push_str("user app\n");
    for i in 0..60 {
        s.push_str(&format!("topic read store/sensors/sensor{i}/+\n"));
    }
    s.push_str("topic deny store/sensors/sensor7/private\n");
    s.push_str("topic readwrite app/#\n");
    s.push_str("pattern readwrite clients/%c/#\n");
    s.push_str("pattern read devices/%u/config\n");
    s.push_str("pattern deny clients/%c/locked\n");
    s.push_str("pattern write status/%u\n");
    s
}

#[test]
fn client_acl_checks_do_not_allocate_and_stay_cheap_with_100_rules() {
    let text = hundred_rule_acl();
    let acl = Acl::parse(&text, Path::new("bench.acl")).unwrap();
    assert_eq!(acl.rule_count(), 100);
    let app = acl.client(&ClientIdentity {
        username: Some("app"),
        client_id: "app-1",
    });
    let sensor = acl.client(&ClientIdentity {
        username: Some("sensor7"),
        client_id: "s7",
    });
    let topics: Vec<String> = (0..64)
        .map(|i| match i % 4 {
            0 => format!("store/sensors/sensor{}/temp", i % 40),
            1 => format!("store/sensors/sensor{}/private", i % 40),
            2 => format!("clients/app-1/x{i}"),
            _ => format!("other/{i}/y"),
        })
        .collect();

    let before = ALLOCS.load(Ordering::Relaxed);
    let mut allowed = 0usize;
    for t in &topics {
        allowed += usize::from(app.check(t, Access::Read));
        allowed += usize::from(sensor.check(t, Access::Write));
        allowed += usize::from(sensor.check(t, Access::Read));
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "ClientAcl::check allocated");
    assert!(allowed > 0);

    // Few rounds in a debug build (CI runs those); the numbers mean something in release.
    let rounds = if cfg!(debug_assertions) { 500 } else { 20_000 };
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for t in &topics {
            n += usize::from(app.check(std::hint::black_box(t), Access::Read));
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (rounds * topics.len()) as f64;
    println!("ClientAcl::check, 100-rule ACL, app reading mixed topics: {per:.0} ns per check ({n} allowed)");

    let reference = ClientIdentity {
        username: Some("app"),
        client_id: "app-1",
    };
    let start = Instant::now();
    for _ in 0..rounds / 10 {
        for t in &topics {
            n += usize::from(acl.check(&reference, std::hint::black_box(t), Access::Read));
        }
    }
    let per_ref = start.elapsed().as_nanos() as f64 / (rounds / 10 * topics.len()) as f64;
    println!("Acl::check (reference walk, substitutes per call): {per_ref:.0} ns per check ({n})");
}
