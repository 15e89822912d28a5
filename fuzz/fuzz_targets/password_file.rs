//! The mosquitto password-file parser, and the hash-field parser and verification on each
//! line's field (verification only for cheap hashes: a `$7$` entry may legitimately ask for up
//! to 2^31-1 PBKDF2 iterations, which is the file owner's choice, not an input bug).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use robustmq_edge::auth::password_file::{HashKind, PasswordFile, PasswordHash};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = PasswordFile::parse(data, Path::new("fuzz.passwd")) {
        let users: Vec<String> = f.users().map(str::to_owned).collect();
        assert_eq!(users.len(), f.len());
        for u in &users {
            assert!(f.contains(u));
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().take(8) {
        let Some((_, field)) = line.split_once(':') else {
            continue;
        };
        if let Ok(h) = PasswordHash::parse(field.trim_end()) {
            let cheap = match h.kind() {
                HashKind::Sha512 => true,
                HashKind::Pbkdf2Sha512 { iterations } => iterations <= 1000,
            };
            if cheap {
                let _ = h.verify(b"password");
            }
        }
    }
});
