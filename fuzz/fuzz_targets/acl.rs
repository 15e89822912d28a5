//! The mosquitto ACL parser, then checks of a few topics for a few clients.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use robustmq_edge::auth::acl::{Access, Acl, ClientAcl, ClientIdentity};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(acl) = Acl::parse(text, Path::new("fuzz.acl")) else {
        return;
    };
    let _ = (acl.rule_count(), acl.warnings().len());
    let clients = [
        ClientIdentity {
            client_id: "c1",
            username: Some("alice"),
        },
        ClientIdentity {
            client_id: "sensor/+/#",
            username: None,
        },
    ];
    let topics = [
        "a/b",
        "sensors/c1/temp",
        "alice/x",
        "$SYS/broker",
        "",
        "/",
        "a//b",
    ];
    for c in &clients {
        let per_client = ClientAcl::new(Some(&acl), c);
        for t in topics {
            for access in [Access::Read, Access::Write, Access::Subscribe] {
                assert_eq!(
                    acl.check(c, t, access),
                    per_client.check(t, access),
                    "{t} {access:?}"
                );
            }
        }
    }
});
