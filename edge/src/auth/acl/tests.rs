//! Unit tests of `acl` (kept apart so that the module stays under 600 lines).

use super::*;

fn acl(text: &str) -> Acl {
    Acl::parse(text, Path::new("test.acl")).expect("parses")
}

fn anon(id: &str) -> ClientIdentity<'_> {
    ClientIdentity {
        username: None,
        client_id: id,
    }
}

fn user<'a>(name: &'a str, id: &'a str) -> ClientIdentity<'a> {
    ClientIdentity {
        username: Some(name),
        client_id: id,
    }
}

/// Checks both paths (reference walk and per-client tree) and insists they agree.
fn can(acl: &Acl, c: &ClientIdentity<'_>, topic: &str, access: Access) -> bool {
    let slow = acl.check(c, topic, access);
    let fast = acl.client(c).check(topic, access);
    assert_eq!(slow, fast, "paths disagree on {c:?} {topic:?} {access:?}");
    slow
}

use Access::{Read, Subscribe, Write};

#[test]
fn rules_before_the_first_user_line_apply_to_anonymous_clients_only() {
    let a = acl("topic read $SYS/#\ntopic public/#\nuser roger\ntopic foo/bar\n");
    let an = anon("c1");
    let roger = user("roger", "c2");
    assert!(can(&a, &an, "public/x", Read));
    assert!(can(&a, &an, "public/x", Write));
    assert!(can(&a, &an, "$SYS/broker/uptime", Read));
    assert!(!can(&a, &an, "foo/bar", Read));
    assert!(can(&a, &roger, "foo/bar", Read));
    assert!(can(&a, &roger, "foo/bar", Write));
    assert!(
        !can(&a, &roger, "public/x", Read),
        "anonymous rules are not for users"
    );
    assert!(!can(&a, &user("other", "c3"), "foo/bar", Read));
}

#[test]
fn access_variants_match_mosquittos_own_test_matrix() {
    // mosquitto test/broker/09-acl-access-variants.py, all three sections enabled.
    let a = acl(concat!(
        "topic readwrite topic/global/#\n",
        "topic deny      topic/global/except\n",
        "user username\n",
        "topic readwrite topic/username/#\n",
        "topic deny      topic/username/except\n",
        "pattern readwrite pattern/%u/#\n",
        "pattern deny      pattern/%u/except\n",
    ));
    let cases = [
        (None, "topic/global", true),
        (Some("username"), "topic/global", false),
        (None, "topic/global/except", false),
        (None, "topic/username", false),
        (Some("username"), "topic/username", true),
        (Some("username"), "topic/username/except", false),
        (None, "pattern/username", false),
        (Some("username"), "pattern/username", true),
        (Some("username"), "pattern/username/except", false),
    ];
    for (name, topic, allowed) in cases {
        let c = ClientIdentity {
            username: name,
            client_id: "acl-check",
        };
        assert_eq!(can(&a, &c, topic, Write), allowed, "{name:?} write {topic}");
        assert_eq!(can(&a, &c, topic, Read), allowed, "{name:?} read {topic}");
    }
}

#[test]
fn pattern_substitutes_username_and_client_id() {
    let a = acl("pattern write sensor/%u/data\npattern read cmd/%c/#\n");
    let s1 = user("s1", "dev-9");
    assert!(can(&a, &s1, "sensor/s1/data", Write));
    assert!(!can(&a, &s1, "sensor/s1/data", Read));
    assert!(!can(&a, &s1, "sensor/s2/data", Write));
    assert!(can(&a, &s1, "cmd/dev-9/reboot", Read));
    assert!(can(&a, &s1, "cmd/dev-9", Read));
    assert!(!can(&a, &s1, "cmd/dev-8/reboot", Read));
    // Patterns apply to anonymous clients too, except those naming %u.
    assert!(can(&a, &anon("dev-7"), "cmd/dev-7/x", Read));
    assert!(!can(&a, &anon("dev-7"), "sensor/%u/data", Write));
}

#[test]
fn substitution_happens_anywhere_in_the_topic_as_mosquitto_does() {
    let a = acl("pattern readwrite home-%u/%c-x\n");
    assert!(can(&a, &user("bob", "k"), "home-bob/k-x", Read));
    let mut s = String::new();
    substitute("%%c/%u/%", &user("u", "c"), &mut s);
    assert_eq!(s, "%c/u/%");
    substitute("%u", &anon("c"), &mut s);
    assert_eq!(s, "%u");
}

#[test]
fn pattern_lines_apply_to_all_users_even_after_a_user_line() {
    let a = acl("user alice\ntopic read a/#\npattern readwrite own/%u/#\n");
    assert!(can(&a, &user("alice", "x"), "own/alice/1", Write));
    assert!(can(&a, &user("bob", "y"), "own/bob/1", Write));
    assert!(!can(&a, &user("bob", "y"), "a/1", Read));
}

#[test]
fn deny_takes_precedence_over_broader_grants_wherever_it_is_written() {
    for text in [
        "topic readwrite home/#\ntopic deny home/secret\n",
        "topic deny home/secret\ntopic readwrite home/#\n",
    ] {
        let a = acl(text);
        let c = anon("c");
        assert!(can(&a, &c, "home/open", Read));
        assert!(!can(&a, &c, "home/secret", Read));
        assert!(!can(&a, &c, "home/secret", Write));
    }
    let a = acl("pattern readwrite p/%c/#\npattern deny p/%c/locked\n");
    assert!(can(&a, &anon("k"), "p/k/open", Write));
    assert!(!can(&a, &anon("k"), "p/k/locked", Write));
}

#[test]
fn a_user_grant_decides_before_a_pattern_deny_is_looked_at() {
    // mosquitto checks the user's own rules first and stops at a grant.
    let a = acl("user u\ntopic readwrite x/#\npattern deny x/%u\n");
    assert!(can(&a, &user("u", "c"), "x/u", Write));
    // ...but a user-level deny is final even if a pattern would grant.
    let a = acl("user u\ntopic deny x/u\npattern readwrite x/%u\n");
    assert!(!can(&a, &user("u", "c"), "x/u", Write));
}

#[test]
fn rule_without_the_access_asked_for_does_not_stop_the_search() {
    let a = acl("topic read a/b\ntopic write a/#\n");
    assert!(can(&a, &anon("c"), "a/b", Write));
    assert!(can(&a, &anon("c"), "a/b", Read));
    assert!(!can(&a, &anon("c"), "a/c", Read));
}

#[test]
fn readwrite_and_omitted_access_word_grant_both_directions() {
    let a = acl("topic readwrite a\ntopic b\ntopic read c\ntopic write d\n");
    let c = anon("c");
    for t in ["a", "b"] {
        assert!(can(&a, &c, t, Read) && can(&a, &c, t, Write), "{t}");
    }
    assert!(can(&a, &c, "c", Read) && !can(&a, &c, "c", Write));
    assert!(!can(&a, &c, "d", Read) && can(&a, &c, "d", Write));
}

#[test]
fn sys_topics_are_never_writable_even_with_a_matching_rule() {
    let a = acl("topic readwrite $SYS/#\ntopic readwrite #\npattern write $SYS/broker/connection/%c/state\n");
    let c = anon("bridge1");
    assert!(!can(&a, &c, "$SYS/broker/connection/bridge1/state", Write));
    assert!(!can(&a, &c, "$SYS/x", Write));
    assert!(can(&a, &c, "$SYS/x", Read));
    assert!(!ClientAcl::unrestricted().check("$SYS/x", Write));
    assert!(ClientAcl::unrestricted().check("$SYS/x", Read));
    assert!(ClientAcl::unrestricted().check("a/b", Write));
}

#[test]
fn hash_rule_does_not_reach_dollar_topics() {
    let a = acl("topic readwrite #\ntopic read +/x\n");
    let c = anon("c");
    assert!(can(&a, &c, "a/b", Read));
    assert!(!can(&a, &c, "$SYS/x", Read));
    assert!(!can(&a, &c, "$other/x", Read));
    assert!(!can(&a, &c, "$SYS/#", Subscribe));
}

#[test]
fn hash_subscriber_is_filtered_per_topic_on_delivery() {
    let a = acl("topic read #\ntopic deny cloud/commands/#\n");
    let c = anon("c");
    assert!(can(&a, &c, "#", Subscribe), "the subscription is allowed");
    assert!(can(&a, &c, "sensors/t1", Read));
    assert!(!can(&a, &c, "cloud/commands/reboot", Read));
    assert!(!can(&a, &c, "cloud/commands", Read));
    assert!(can(&a, &c, "cloud/other", Read));
}

#[test]
fn subscribe_is_refused_only_when_nothing_under_the_filter_is_readable() {
    let a = acl(concat!(
        "topic readwrite #\n",
        "topic deny test/nosubscribe\n",
        "topic write only/write/#\n",
    ));
    let c = anon("c");
    assert!(!can(&a, &c, "test/nosubscribe", Subscribe));
    assert!(can(&a, &c, "test/+", Subscribe));
    assert!(can(&a, &c, "#", Subscribe));
    assert!(can(&a, &c, "test/nosubscribe/deeper", Subscribe));
    // `#` grants read over only/write too; deny nothing there.
    assert!(can(&a, &c, "only/write/x", Subscribe));

    let a = acl("topic read sensors/#\ntopic write cmd/#\ntopic deny sensors/private/#\n");
    assert!(can(&a, &c, "sensors/+/t", Subscribe));
    assert!(can(&a, &c, "+/x", Subscribe));
    assert!(
        !can(&a, &c, "cmd/#", Subscribe),
        "write-only: nothing readable"
    );
    assert!(!can(&a, &c, "other/#", Subscribe));
    assert!(!can(&a, &c, "sensors/private/#", Subscribe));
    assert!(!can(&a, &c, "sensors/private", Subscribe), "a/# covers a");
    assert!(can(&a, &c, "sensors/#", Subscribe));
    // Shared subscriptions are judged by the filter inside them.
    assert!(can(&a, &c, "$share/g/sensors/#", Subscribe));
    assert!(!can(&a, &c, "$share/g/cmd/#", Subscribe));
}

#[test]
fn subscribe_through_patterns_and_sys() {
    let a = acl("topic read $SYS/broker/#\npattern read devices/%c/#\n");
    let c = anon("d1");
    assert!(can(&a, &c, "devices/d1/#", Subscribe));
    assert!(can(&a, &c, "devices/+/status", Subscribe));
    assert!(!can(&a, &c, "devices/d2/#", Subscribe));
    assert!(can(&a, &c, "$SYS/#", Subscribe));
    assert!(can(&a, &c, "$SYS/broker/load", Subscribe));
    assert!(!can(&a, &c, "$SYS/other", Subscribe));
    assert!(can(&a, &c, "#", Subscribe), "devices/d1/... is readable");
}

#[test]
fn share_is_never_a_topic_name() {
    let a = acl("topic readwrite #\ntopic readwrite $share/#\n");
    assert!(!can(&a, &anon("c"), "$share/g/t", Write));
    assert!(!can(&a, &anon("c"), "$share/g/t", Read));
}

#[test]
fn wildcard_in_username_or_client_id_loses_pattern_rules() {
    let a = acl("user a+b\ntopic readwrite x\npattern readwrite q/%c\npattern readwrite open/+\n");
    // Own user rules still decide first, as in mosquitto.
    assert!(can(&a, &user("a+b", "c"), "x", Write));
    assert!(!can(&a, &user("a+b", "c"), "q/c", Write));
    assert!(!can(&a, &user("a+b", "c"), "open/1", Read));
    assert!(!can(&a, &anon("c#"), "open/1", Write));
    assert!(!can(&a, &anon("c#"), "open/+", Subscribe));
    assert!(can(&a, &anon("ok"), "q/ok", Write));
    assert!(can(&a, &anon("ok"), "open/1", Write));
}

#[test]
fn empty_acl_denies_everything_but_unrestricted_allows() {
    let a = acl("# nothing\n\n");
    let c = anon("c");
    assert!(!can(&a, &c, "a", Read));
    assert!(!can(&a, &c, "a", Write));
    assert!(!can(&a, &c, "#", Subscribe));
    let u = ClientAcl::new(None, &c);
    assert!(u.check("a", Read) && u.check("a", Write) && u.check("#", Subscribe));
}

#[test]
fn user_without_rules_gets_patterns_only() {
    let a = acl("topic read anon/#\nuser x\npattern read mine/%u\n");
    assert!(!can(&a, &user("nobody", "c"), "anon/1", Read));
    assert!(can(&a, &user("nobody", "c"), "mine/nobody", Read));
}

#[test]
fn repeated_user_blocks_are_merged() {
    let a = acl("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n");
    assert!(can(&a, &user("u", "1"), "a", Read));
    assert!(can(&a, &user("u", "1"), "c", Read));
    assert!(!can(&a, &user("u", "1"), "b", Read));
}

#[test]
fn parse_follows_mosquittos_tokenising() {
    // Topic may contain spaces once the access word is given; trailing blanks and CR go.
    let a = acl("user  bob smith \r\ntopic read  my topic/x  \r\n");
    assert!(can(&a, &user("bob smith", "c"), "my topic/x", Read));
    // `topic read` alone is the topic "read", readwrite.
    let a = acl("topic read\n");
    assert!(can(&a, &anon("c"), "read", Write));
    // Leading spaces before a keyword are fine.
    let a = acl("   topic a\n");
    assert!(can(&a, &anon("c"), "a", Read));
}

#[test]
fn malformed_lines_are_errors_with_file_and_line() {
    for (text, line) in [
        ("topic read a\nbogus x\n", 2),
        ("\n\ntopic\n", 3),
        ("topic foo bar\n", 1),
        ("user\n", 1),
        ("user    \n", 1),
        ("topic read a/#/b\n", 1),
        ("pattern read a+\n", 1),
        ("topic\tread\ta\n", 1),
        ("  # indented comment\n", 1),
    ] {
        let e = Acl::parse(text, Path::new("/etc/edge/acl")).unwrap_err();
        assert_eq!(e.line(), Some(line), "{text:?}: {e}");
        assert!(e
            .to_string()
            .starts_with(&format!("acl file /etc/edge/acl line {line}: ")));
    }
    let deep = format!("topic {}\n", "a/".repeat(201) + "a");
    assert!(Acl::parse(&deep, Path::new("x")).is_err());
    let ok = format!("topic {}\n", "a/".repeat(200) + "a");
    assert!(Acl::parse(&ok, Path::new("x")).is_ok());
}

#[test]
fn pattern_without_substitution_is_a_warning_not_an_error() {
    let a = acl("pattern read plain/topic\n");
    assert_eq!(a.warnings().len(), 1);
    assert!(can(&a, &anon("c"), "plain/topic", Read));
}

#[test]
fn invalid_topic_names_are_refused() {
    let a = acl("topic readwrite #\n");
    assert!(!can(&a, &anon("c"), "a/+", Read));
    assert!(!can(&a, &anon("c"), "", Write));
}

#[test]
fn load_reports_invalid_utf8_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("acl");
    std::fs::write(&p, b"topic a\ntopic \xff\n").unwrap();
    assert_eq!(Acl::load(&p).unwrap_err().line(), Some(2));
    assert!(Acl::load(&dir.path().join("missing"))
        .unwrap_err()
        .line()
        .is_none());
}

#[test]
fn each_parsed_acl_has_its_own_generation_for_stale_client_views() {
    let a = acl("topic a\n");
    let b = acl("topic a\n");
    assert_ne!(a.generation(), b.generation());
    assert_ne!(a.generation(), 0);
    assert_eq!(a.client(&anon("c")).generation(), a.generation());
    assert_eq!(ClientAcl::unrestricted().generation(), 0);
}

#[test]
fn filter_relations() {
    // intersects(a, b): some topic matches both; covers(a, b): a matches every topic b does.
    type Relation = fn(&str, &str) -> bool;
    let i: (&str, Relation) = ("intersects", intersects);
    let c: (&str, Relation) = ("covers", covers);
    let cases = [
        (i, "a/+", "+/b", true),
        (i, "a/#", "a", true),
        (i, "#", "x/y", true),
        (i, "a/b", "a/c", false),
        (i, "a/b/c", "a/b", false),
        (i, "#", "$SYS/x", false),
        (i, "$SYS/#", "$SYS/+", true),
        (i, "+/x", "$SYS/x", false),
        (c, "a/#", "a", true),
        (c, "a/#", "a/+/c", true),
        (c, "a/+", "a/b", true),
        (c, "+/+", "+/b", true),
        (c, "a/+", "a/#", false),
        (c, "a/b", "a/+", false),
        (c, "#", "$SYS/a", false),
        (c, "#", "#", true),
        (c, "a/b", "a/b/c", false),
        (c, "a/b/#", "a", false),
    ];
    for ((name, relation), a, b, want) in cases {
        assert_eq!(relation(a, b), want, "{name}({a:?}, {b:?})");
    }
}

#[test]
fn arbitrary_text_never_panics_the_parser_or_checker() {
    let alphabet: Vec<char> = "topic pattern user read write deny # + / % c u $ \t\r\n é a"
        .chars()
        .collect();
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..3000 {
        let text: String = (0..rng.usize(0..80))
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        if let Ok(a) = Acl::parse(&text, Path::new("fuzz")) {
            let topic: String = (0..rng.usize(0..12))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let c = user("u", "c");
            for access in [Read, Write, Subscribe] {
                let _ = can(&a, &c, &topic, access);
            }
        }
    }
}

/// Random rules, identities and topics: the tree and the reference walk always agree.
#[test]
fn per_client_tree_agrees_with_the_reference_walk() {
    let levels = ["a", "b", "%u", "%c", "+", "#", "$SYS", ""];
    let tlevels = ["a", "b", "u1", "c1", "$SYS", ""];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut outcomes = [0u32; 2];
    for _ in 0..300 {
        let mut text = String::new();
        for _ in 0..rng.usize(1..12) {
            match rng.u8(..10) {
                0 => text.push_str(&format!("user u{}\n", rng.u8(1..3))),
                k => {
                    let n = rng.usize(1..4);
                    let mut t: Vec<&str> =
                        (0..n).map(|_| levels[rng.usize(..levels.len())]).collect();
                    // keep `#` last
                    if let Some(p) = t.iter().position(|l| *l == "#") {
                        t.truncate(p + 1);
                    }
                    let acc = ["read", "write", "readwrite", "deny"][rng.usize(..4)];
                    let kw = if k < 4 { "pattern" } else { "topic" };
                    text.push_str(&format!("{kw} {acc} {}\n", t.join("/")));
                }
            }
        }
        let a = Acl::parse(&text, Path::new("r")).unwrap_or_else(|e| panic!("{e}: {text}"));
        for _ in 0..40 {
            let n = rng.usize(1..4);
            let topic: Vec<&str> = (0..n)
                .map(|_| tlevels[rng.usize(..tlevels.len())])
                .collect();
            let topic = topic.join("/");
            let name = ["u1", "u2", "x+"][rng.usize(..3)];
            let c = ClientIdentity {
                username: rng.bool().then_some(name),
                client_id: ["c1", "c#"][rng.usize(..2)],
            };
            let access = [Read, Write][rng.usize(..2)];
            outcomes[usize::from(can(&a, &c, &topic, access))] += 1;
        }
    }
    assert!(outcomes[0] > 1000 && outcomes[1] > 1000, "{outcomes:?}");
}

#[test]
fn cached_checks_answer_as_uncached_ones_for_each_topic_and_access() {
    let a = acl("user alice\ntopic read r/#\ntopic write w/#\ntopic deny w/secret\n");
    let mut c = a.client(&user("alice", "c1"));
    let fresh = a.client(&user("alice", "c1"));
    let topics: Vec<Arc<str>> = ["w/a", "w/a", "w/secret", "r/x", "w/a", "$SYS/x", "r/x"]
        .iter()
        .map(|t| Arc::from(*t))
        .collect();
    for t in &topics {
        for access in [Read, Write, Read] {
            assert_eq!(
                c.check_cached(t, access),
                fresh.check(t, access),
                "{t} {access:?}"
            );
        }
    }
}

#[test]
fn a_client_acl_without_rules_is_one_pointer_and_generation_zero() {
    let mut c = ClientAcl::unrestricted();
    assert_eq!(
        std::mem::size_of::<ClientAcl>(),
        std::mem::size_of::<usize>()
    );
    assert_eq!(c.generation(), 0);
    assert!(c.check_cached(&Arc::from("a/b"), Write));
    assert!(!c.check_cached(&Arc::from("$SYS/x"), Write));
    let a = acl("topic a/#\n");
    assert_ne!(a.client(&anon("c")).generation(), 0);
}
