//! mosquitto's password file (`user:$7$iter$salt$hash` PBKDF2-HMAC-SHA512, legacy `user:$6$salt$hash`
//! SHA512(password‖salt)), read, verified and written as mosquitto 2.x does. Invariants: a file parses
//! whole or is an error naming file and line; constant-time compare; atomic 0600 writes.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Salt length mosquitto writes and insists on when reading (`SALT_LEN`).
pub const SALT_LEN: usize = 12;
/// PBKDF2 iterations `mosquitto_passwd` 2.x uses unless told otherwise (`PW_DEFAULT_ITERATIONS`).
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Hash length: one SHA512 output, for both formats.
pub const HASH_LEN: usize = 64;
/// Longest user name or hash field mosquitto accepts on a line.
const MAX_FIELD_LEN: usize = 65535;

/// OpenSSL's base64 as mosquitto uses it: standard alphabet, written with padding; padding is
/// not insisted on when reading.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How a stored hash was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `$6$`: SHA512(password ‖ salt), mosquitto 1.x's format.
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations, mosquitto 2.x's default.
    Pbkdf2Sha512 { iterations: u32 },
}

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    kind: HashKind,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not secret in the cryptographic sense, but it has no business in logs.
        f.debug_struct("PasswordHash")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// A new `$7$` hash of `password` with a fresh random 12-byte salt and 101 iterations, as
    /// `mosquitto_passwd` 2.x writes by default.
    pub fn new(password: &[u8]) -> Result<PasswordHash, getrandom::Error> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::getrandom(&mut salt)?;
        Ok(PasswordHash::with_salt(
            password,
            salt,
            HashKind::Pbkdf2Sha512 {
                iterations: DEFAULT_ITERATIONS,
            },
        ))
    }

    /// The hash of `password` with a given salt and kind (deterministic; for tests and `new`).
    pub fn with_salt(password: &[u8], salt: [u8; SALT_LEN], kind: HashKind) -> PasswordHash {
        PasswordHash {
            kind,
            salt,
            hash: digest(kind, password, &salt),
        }
    }

    pub fn kind(&self) -> HashKind {
        self.kind
    }

    /// Parses the hash field of a line (`$7$101$salt$hash` or `$6$salt$hash`). The error is a
    /// reason fit for a message; it never repeats the field.
    pub fn parse(field: &str) -> Result<PasswordHash, String> {
        let rest = field.strip_prefix('$').ok_or_else(|| {
            "the hash does not start with '$' (a plain-text password? mosquitto_passwd -U hashes those)"
                .to_string()
        })?;
        let mut parts = rest.split('$');
        let kind = match parts.next() {
            Some("6") => HashKind::Sha512,
            Some("7") => {
                let it = parts.next().unwrap_or("");
                // mosquitto reads this with atoi() into an int and insists on >= 1.
                let iterations: u32 = it
                    .parse()
                    .ok()
                    .filter(|n| (1..=i32::MAX as u32).contains(n))
                    .ok_or_else(|| format!("invalid iteration count {it:?}"))?;
                HashKind::Pbkdf2Sha512 { iterations }
            }
            Some(t) => {
                return Err(format!(
                    "unknown hash type ${t}$ (mosquitto knows $6$ and $7$)"
                ))
            }
            None => return Err("empty hash".into()),
        };
        let (Some(salt64), Some(hash64), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected $salt$hash after the hash type".into());
        };
        let salt = decode_exact::<SALT_LEN>(salt64)
            .ok_or_else(|| format!("the salt is not {SALT_LEN} bytes of base64"))?;
        let hash = decode_exact::<HASH_LEN>(hash64)
            .ok_or_else(|| format!("the hash is not {HASH_LEN} bytes of base64"))?;
        Ok(PasswordHash { kind, salt, hash })
    }

    /// True when `password` hashes to the stored value. Constant time in the comparison; the
    /// hashing itself costs the same for every password of a given length.
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = digest(self.kind, password, &self.salt);
        computed.ct_eq(&self.hash).into()
    }
}

impl fmt::Display for PasswordHash {
    /// The field exactly as `mosquitto_passwd` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let salt = B64.encode(self.salt);
        let hash = B64.encode(self.hash);
        match self.kind {
            HashKind::Sha512 => write!(f, "$6${salt}${hash}"),
            HashKind::Pbkdf2Sha512 { iterations } => write!(f, "$7${iterations}${salt}${hash}"),
        }
    }
}

fn decode_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    let v = B64.decode(s).ok()?;
    v.try_into().ok()
}

fn digest(kind: HashKind, password: &[u8], salt: &[u8; SALT_LEN]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match kind {
        HashKind::Sha512 => {
            let mut h = Sha512::new();
            h.update(password);
            h.update(salt);
            out.copy_from_slice(&h.finalize());
        }
        HashKind::Pbkdf2Sha512 { iterations } => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
        }
    }
    out
}

/// A password file that failed to load: the file, and for a bad line its 1-based number.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("password file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("password file {} line {line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl PasswordFileError {
    /// The 1-based line number of a malformed line, None for an I/O error.
    pub fn line(&self) -> Option<usize> {
        match self {
            PasswordFileError::Io { .. } => None,
            PasswordFileError::Line { line, .. } => Some(*line),
        }
    }
}

/// C's isspace() in the "C" locale, which mosquitto trims with.
fn c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// What one line of a password file holds.
#[derive(Debug, Clone)]
enum Line {
    /// A comment (first character `#`) or a blank line, kept verbatim when rewriting.
    Other(String),
    /// `user:hash`.
    Entry { user: String, hash: PasswordHash },
}

/// Classifies one line (without its `\n`) as mosquitto's broker reads it: `#` in the first
/// column is a comment, a line of blanks is ignored, anything else is `user:hash` with blanks
/// around either part trimmed. Stricter than mosquitto where it would skip a line with a
/// warning: that is an error here.
fn parse_line(raw: &str) -> Result<Line, String> {
    if raw.starts_with('#') || raw.chars().all(c_space) {
        return Ok(Line::Other(raw.to_string()));
    }
    let Some((user, hash)) = raw.split_once(':') else {
        return Err("expected user:hash (no ':' on the line)".into());
    };
    let user = user.trim_matches(c_space);
    let hash = hash.trim_matches(c_space);
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user.len() > MAX_FIELD_LEN {
        return Err("user name longer than 65535 bytes".into());
    }
    if hash.is_empty() {
        return Err(format!("no password hash for user {user:?}"));
    }
    if hash.contains(':') {
        return Err(format!("unexpected ':' in the hash of user {user:?}"));
    }
    let hash = PasswordHash::parse(hash).map_err(|r| format!("user {user:?}: {r}"))?;
    Ok(Line::Entry {
        user: user.to_string(),
        hash,
    })
}

/// Splits file content into lines the way fgets() does (`\n` ends a line; a final line without
/// one still counts), checking each is UTF-8.
fn split_lines<'a>(
    bytes: &'a [u8],
    path: &'a Path,
) -> impl Iterator<Item = Result<(usize, &'a str), PasswordFileError>> + 'a {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|b| *b == b'\n')
        .take(if empty { 0 } else { usize::MAX })
        .enumerate()
        .map(move |(i, l)| {
            std::str::from_utf8(l)
                .map(|s| (i + 1, s))
                .map_err(|_| PasswordFileError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: "not valid UTF-8".into(),
                })
        })
}

fn parse_document(bytes: &[u8], path: &Path) -> Result<Vec<Line>, PasswordFileError> {
    let mut lines = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in split_lines(bytes, path) {
        let (n, raw) = item?;
        let line = parse_line(raw).map_err(|reason| PasswordFileError::Line {
            path: path.to_path_buf(),
            line: n,
            reason,
        })?;
        if let Line::Entry { user, .. } = &line {
            if let Some(first) = seen.insert(user.clone(), n) {
                return Err(PasswordFileError::Line {
                    path: path.to_path_buf(),
                    line: n,
                    reason: format!("user {user:?} already appears on line {first}"),
                });
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

/// The users of a password file, ready to check CONNECT credentials against.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    /// Parses file content; `path` only names the file in errors.
    pub fn parse(content: &[u8], path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let users = parse_document(content, path)?
            .into_iter()
            .filter_map(|l| match l {
                Line::Entry { user, hash } => Some((user, hash)),
                Line::Other(_) => None,
            })
            .collect();
        Ok(PasswordFile { users })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let bytes = fs::read(path).map_err(|source| PasswordFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PasswordFile::parse(&bytes, path)
    }

    /// True when `user` is in the file and `password` is theirs. An unknown user costs one
    /// default-strength hash too, so timing does not tell which user names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(h) => h.verify(password),
            None => {
                let _ = digest(
                    HashKind::Pbkdf2Sha512 {
                        iterations: DEFAULT_ITERATIONS,
                    },
                    password,
                    &[0u8; SALT_LEN],
                );
                false
            }
        }
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// A password file opened for editing: keeps comments, blank lines and the order of users, so
/// a rewrite changes only the line of the user being set or deleted.
#[derive(Debug, Clone, Default)]
pub struct PasswordFileEditor {
    lines: Vec<Line>,
}

impl PasswordFileEditor {
    /// An empty file (what `-c` starts from).
    pub fn new() -> PasswordFileEditor {
        PasswordFileEditor::default()
    }

    /// Opens an existing file; a malformed line refuses the edit (error with file and line).
    pub fn open(path: &Path) -> Result<PasswordFileEditor, PasswordFileError> {
        let bytes = fs::read(path).map_err(|source| PasswordFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PasswordFileEditor {
            lines: parse_document(&bytes, path)?,
        })
    }

    /// Sets `user`'s hash: replaces their line in place, or appends one. True when the user
    /// was already there.
    pub fn set(&mut self, user: &str, hash: PasswordHash) -> bool {
        for line in &mut self.lines {
            if let Line::Entry { user: u, hash: h } = line {
                if u == user {
                    *h = hash;
                    return true;
                }
            }
        }
        self.lines.push(Line::Entry {
            user: user.to_string(),
            hash,
        });
        false
    }

    /// Removes `user`; false when they were not in the file.
    pub fn delete(&mut self, user: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry { user: u, .. } if u == user));
        self.lines.len() != before
    }

    /// The file's content as it would be written.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Other(s) => out.push_str(s),
                Line::Entry { user, hash } => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(&hash.to_string());
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically with mode 0600 (see [`write_atomic`]).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_atomic(path, self.render().as_bytes())
    }
}

/// Replaces `path` with `content` so that a reader sees the old file or the new one, never a
/// part: a temporary file in the same folder (mode 0600, and the old file's owner when we may
/// set it), written and fsynced, renamed over `path`, then the folder fsynced.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    // Through a symlink (e.g. into a config folder), replace the file it points to.
    let resolved = fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let (tmp_path, mut file) = {
        let mut attempt = 0u32;
        loop {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(
                ".tmp.{}.{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            let p = dir.join(tmp_name);
            match opts.open(&p) {
                Ok(f) => break (p, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let result = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            // umask may have narrowed the mode further; make it exactly 0600.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            // Keep the file readable by whoever owned it (e.g. the broker's user when an
            // administrator edits it as root). Not being allowed to is not an error.
            if let Ok(old) = fs::metadata(path) {
                let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
            }
        }
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp_path, path)?;
        // The rename is durable once the folder is.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

#[cfg(test)]
mod tests;
