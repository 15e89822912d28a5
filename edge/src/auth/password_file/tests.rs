//! Unit tests of `password_file` (kept apart so that the module stays under 600 lines).

use super::*;

const FIXTURE: &str = include_str!("../../../tests/fixtures/mosquitto_passwd.txt");

fn p() -> &'static Path {
    Path::new("test.pw")
}

#[test]
fn file_written_by_mosquitto_passwd_verifies_right_passwords_and_refuses_wrong_ones() {
    let pf = PasswordFile::parse(FIXTURE.as_bytes(), p()).expect("fixture parses");
    assert_eq!(pf.len(), 4);
    for (user, pw) in [
        ("alice", "alice-secret"),
        ("bob", "bob-secret"),
        ("carol", "pässwörd with spaces"),
        ("dave", "dave-secret"),
    ] {
        assert!(
            pf.verify(user, pw.as_bytes()),
            "{user} with the right password"
        );
        assert!(!pf.verify(user, b"wrong"), "{user} with a wrong password");
        assert!(!pf.verify(user, b""), "{user} with an empty password");
    }
    assert!(!pf.verify("mallory", b"alice-secret"));
    assert!(!pf.verify("alice", b"bob-secret"), "passwords are per user");
}

#[test]
fn fixture_has_both_hash_kinds_and_the_iteration_count_it_was_made_with() {
    let lines = parse_document(FIXTURE.as_bytes(), p()).unwrap();
    let kinds: Vec<HashKind> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Entry { hash, .. } => Some(hash.kind()),
            Line::Other(_) => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            HashKind::Pbkdf2Sha512 { iterations: 101 },
            HashKind::Sha512,
            HashKind::Pbkdf2Sha512 { iterations: 101 },
            HashKind::Pbkdf2Sha512 { iterations: 1000 },
        ]
    );
}

#[test]
fn hash_field_round_trips_byte_for_byte() {
    for line in FIXTURE.lines() {
        let (_, field) = line.split_once(':').unwrap();
        assert_eq!(PasswordHash::parse(field).unwrap().to_string(), field);
    }
}

#[test]
fn sha512_kind_is_sha512_of_password_then_salt() {
    let salt = *b"0123456789ab";
    let h = PasswordHash::with_salt(b"pw", salt, HashKind::Sha512);
    let mut d = Sha512::new();
    d.update(b"pw0123456789ab");
    let expect: [u8; 64] = d.finalize().into();
    assert_eq!(h.hash, expect);
}

#[test]
fn new_hashes_are_pbkdf2_with_101_iterations_and_a_fresh_12_byte_salt() {
    let a = PasswordHash::new(b"same").unwrap();
    let b = PasswordHash::new(b"same").unwrap();
    assert_eq!(a.kind(), HashKind::Pbkdf2Sha512 { iterations: 101 });
    assert_ne!(a.salt, b.salt, "salts are random");
    assert!(a.verify(b"same") && b.verify(b"same"));
    let field = a.to_string();
    assert!(field.starts_with("$7$101$"), "{field}");
    // 12 bytes -> 16 base64 characters, 64 bytes -> 88.
    let parts: Vec<&str> = field.split('$').collect();
    assert_eq!(parts[3].len(), 16);
    assert_eq!(parts[4].len(), 88);
}

#[test]
fn comments_and_blank_lines_are_ignored_as_mosquitto_does() {
    let text = format!("# a comment\n\n   \r\n#no:space:needed\n{FIXTURE}\n\n# trailing\n");
    let pf = PasswordFile::parse(text.as_bytes(), p()).unwrap();
    assert_eq!(pf.len(), 4);
    assert!(!pf.contains("#no"));
}

#[test]
fn crlf_line_ends_and_blanks_around_fields_are_trimmed() {
    let first = FIXTURE.lines().next().unwrap();
    let (user, field) = first.split_once(':').unwrap();
    let text = format!(" {user} :\t{field} \r\n");
    let pf = PasswordFile::parse(text.as_bytes(), p()).unwrap();
    assert!(pf.verify("alice", b"alice-secret"));
}

#[test]
fn malformed_lines_are_errors_naming_file_and_line() {
    let good = FIXTURE.lines().next().unwrap();
    let cases = [
        "no colon here",
        ":$7$101$AAAAAAAAAAAAAAAA$",
        "eve:",
        "eve:plaintext",
        "eve:$5$abc$def",
        "eve:$7$0$yGvqHctPg7rkxemM$AAAA",
        "eve:$7$x$yGvqHctPg7rkxemM$AAAA",
        "eve:$7$101$c2hvcnQ=$AAAA",
        "eve:$6$yGvqHctPg7rkxemM$c2hvcnQ=",
        "eve:$6$yGvqHctPg7rkxemM",
        "eve:$6$yGvqHctPg7rkxemM$!!!!",
    ];
    for bad in cases {
        let text = format!("# users\n{good}\n{bad}\n");
        let err = PasswordFile::parse(text.as_bytes(), Path::new("/etc/x.pw")).unwrap_err();
        assert_eq!(err.line(), Some(3), "{bad:?}: {err}");
        let msg = err.to_string();
        assert!(msg.starts_with("password file /etc/x.pw line 3: "), "{msg}");
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_parser() {
    let alphabet = b"ab:$67#01 \t\r\n=+/AZ\xff\xc3";
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..5000 {
        let bytes: Vec<u8> = (0..rng.usize(0..60))
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect();
        let _ = PasswordFile::parse(&bytes, p());
    }
    // A well-formed line with arbitrary tails after each field.
    let good = FIXTURE.lines().next().unwrap();
    for cut in 0..good.len() {
        let _ = PasswordFile::parse(&good.as_bytes()[..cut], p());
    }
}

#[test]
fn a_user_listed_twice_is_an_error() {
    let good = FIXTURE.lines().next().unwrap();
    let text = format!("{good}\n{good}\n");
    let err = PasswordFile::parse(text.as_bytes(), p()).unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn invalid_utf8_is_an_error_with_its_line() {
    let err = PasswordFile::parse(b"# ok\nbad\xff:$6$x$y\n", p()).unwrap_err();
    assert_eq!(err.line(), Some(2));
}

#[test]
fn empty_file_has_no_users() {
    let pf = PasswordFile::parse(b"", p()).unwrap();
    assert!(pf.is_empty());
    assert!(!pf.verify("anyone", b""));
}

#[test]
fn errors_never_repeat_the_hash() {
    let text = "eve:$7$101$yGvqHctPg7rkxemM$SECRETSECRET\n";
    let err = PasswordFile::parse(text.as_bytes(), p()).unwrap_err();
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[test]
fn editor_sets_and_deletes_users_keeping_comments_and_order() {
    let text = format!("# header\n{FIXTURE}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    fs::write(&path, &text).unwrap();
    let mut ed = PasswordFileEditor::open(&path).unwrap();
    assert!(ed.set("bob", PasswordHash::new(b"new-bob").unwrap()));
    assert!(!ed.set("erin", PasswordHash::new(b"erin-pw").unwrap()));
    assert!(ed.delete("carol"));
    assert!(!ed.delete("carol"));
    ed.save(&path).unwrap();
    let out = fs::read_to_string(&path).unwrap();
    let users: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(users, ["# header", "alice", "bob", "dave", "erin"]);
    // Untouched lines are kept byte for byte.
    assert!(out.contains(FIXTURE.lines().next().unwrap()));
    let pf = PasswordFile::load(&path).unwrap();
    assert!(pf.verify("bob", b"new-bob"));
    assert!(!pf.verify("bob", b"bob-secret"));
    assert!(pf.verify("erin", b"erin-pw"));
    assert!(pf.verify("alice", b"alice-secret"));
    assert!(!pf.contains("carol"));
}

#[test]
fn editor_refuses_a_malformed_file_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    fs::write(&path, "alice:plain\n").unwrap();
    let err = PasswordFileEditor::open(&path).unwrap_err();
    assert_eq!(err.line(), Some(1));
}

#[cfg(unix)]
#[test]
fn atomic_write_leaves_mode_0600_and_no_temp_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    fs::write(&path, "old\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic(&path, b"new\n").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("pw")]);
}

#[cfg(unix)]
#[test]
fn atomic_write_through_a_symlink_replaces_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let link = dir.path().join("link");
    fs::write(&real, "old\n").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    write_atomic(&link, b"new\n").unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&real).unwrap(), "new\n");
}

#[test]
fn atomic_write_into_a_missing_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("pw");
    assert!(write_atomic(&path, b"x").is_err());
    assert!(!path.exists());
}
