//! `robustmq-edge passwd [-c] [-D] [-b] FILE USER [PASSWORD] [--password-stdin]`, like mosquitto_passwd.
//! Invariants: new entries are `$7$` (PBKDF2-SHA512, 101 iterations, 12-byte random salt); the file
//! is replaced atomically, mode 0600, comments kept; a malformed file is never rewritten.

use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use super::password_file::{PasswordFileEditor, PasswordFileError, PasswordHash};

/// Longest password MQTT can carry (a two-byte length).
const MAX_PASSWORD_LEN: usize = 65535;

#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Adds, changes or deletes a user in a mosquitto-format password file",
    long_about = "Adds, changes (-c: creates) or deletes (-D) a user in a password file in \
                  mosquitto_passwd's format. The password is asked for twice without echo, or \
                  read from the first line of standard input with --password-stdin. The file \
                  is replaced atomically and left with mode 0600."
)]
pub struct PasswdArgs {
    /// Create FILE with only this user, replacing any existing file.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Delete USER from FILE.
    #[arg(short = 'D', conflicts_with_all = ["batch", "password_stdin"])]
    pub delete: bool,
    /// Batch mode, as in mosquitto_passwd: the password is the argument after USER. Other local
    /// users can see it in the process list; prefer --password-stdin.
    #[arg(short = 'b', conflicts_with = "password_stdin", requires = "password")]
    pub batch: bool,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The password file.
    pub file: PathBuf,
    /// The user name.
    pub user: String,
    /// The password (only with -b).
    #[arg(requires = "batch")]
    pub password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("invalid user name: {0}")]
    InvalidUser(&'static str),
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    #[error("passwords do not match")]
    PasswordsDiffer,
    #[error("cannot prompt for a password without a terminal: use --password-stdin or -b")]
    NoTerminal,
    #[error("cannot read the password: {0}")]
    ReadPassword(#[source] io::Error),
    #[error("user {user:?} is not in {}", path.display())]
    UserNotFound { user: String, path: PathBuf },
    #[error(transparent)]
    File(#[from] PasswordFileError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no random numbers for the salt: {0}")]
    Random(getrandom::Error),
}

/// What `mosquitto_passwd` refuses, plus what would not read back the same: blanks at either
/// end (trimmed when read) and a leading `#` (a comment).
pub fn validate_user(user: &str) -> Result<(), PasswdError> {
    if user.is_empty() {
        return Err(PasswdError::InvalidUser("empty"));
    }
    if user.len() > 65535 {
        return Err(PasswdError::InvalidUser("longer than 65535 bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err(PasswdError::InvalidUser("contains control characters"));
    }
    if user.contains(':') {
        return Err(PasswdError::InvalidUser("contains ':'"));
    }
    if user.starts_with('#') {
        return Err(PasswdError::InvalidUser(
            "starts with '#' (the line would be a comment)",
        ));
    }
    if user.trim() != user {
        return Err(PasswdError::InvalidUser("starts or ends with a blank"));
    }
    Ok(())
}

fn validate_password(pw: &[u8]) -> Result<(), PasswdError> {
    if pw.is_empty() {
        return Err(PasswdError::InvalidPassword("empty"));
    }
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(PasswdError::InvalidPassword("longer than 65535 bytes"));
    }
    Ok(())
}

/// The first line of `input`, without its line end.
pub fn read_password_line(input: &mut dyn BufRead) -> Result<Vec<u8>, PasswdError> {
    let mut line = Vec::new();
    input
        .read_until(b'\n', &mut line)
        .map_err(PasswdError::ReadPassword)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

fn prompt_password() -> Result<Vec<u8>, PasswdError> {
    if !io::stdin().is_terminal() {
        return Err(PasswdError::NoTerminal);
    }
    let first = rpassword::prompt_password("Password: ").map_err(PasswdError::ReadPassword)?;
    validate_password(first.as_bytes())?;
    let again =
        rpassword::prompt_password("Reenter password: ").map_err(PasswdError::ReadPassword)?;
    if first != again {
        return Err(PasswdError::PasswordsDiffer);
    }
    Ok(first.into_bytes())
}

fn obtain_password(args: &PasswdArgs) -> Result<Vec<u8>, PasswdError> {
    let pw = if let Some(p) = &args.password {
        p.clone().into_bytes()
    } else if args.password_stdin {
        read_password_line(&mut io::stdin().lock())?
    } else {
        prompt_password()?
    };
    validate_password(&pw)?;
    Ok(pw)
}

/// Carries out the subcommand.
pub fn run(args: &PasswdArgs) -> Result<(), PasswdError> {
    validate_user(&args.user)?;
    let mut editor = if args.create {
        PasswordFileEditor::new()
    } else {
        // Read (and check) the file before asking for a password.
        PasswordFileEditor::open(&args.file)?
    };
    if args.delete {
        if !editor.delete(&args.user) {
            return Err(PasswdError::UserNotFound {
                user: args.user.clone(),
                path: args.file.clone(),
            });
        }
    } else {
        let pw = obtain_password(args)?;
        let hash = PasswordHash::new(&pw).map_err(PasswdError::Random)?;
        editor.set(&args.user, hash);
    }
    editor
        .save(&args.file)
        .map_err(|source| PasswdError::Write {
            path: args.file.clone(),
            source,
        })
}

/// [`run`] for `main`: prints an error and gives the exit status (1 on failure, as
/// mosquitto_passwd).
pub fn main(args: &PasswdArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::password_file::PasswordFile;
    use super::*;
    use clap::Parser;
    use std::fs;
    use std::path::Path;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PasswdArgs,
    }

    fn parse(argv: &[&str]) -> Result<PasswdArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("passwd").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn path_str(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn batch_create_then_add_change_and_delete_users() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        let fp = path_str(&f);
        run(&parse(&["-c", "-b", fp, "alice", "one"]).unwrap()).unwrap();
        run(&parse(&["-b", fp, "bob", "two"]).unwrap()).unwrap();
        run(&parse(&["-b", fp, "alice", "three"]).unwrap()).unwrap();
        let pf = PasswordFile::load(&f).unwrap();
        assert!(pf.verify("alice", b"three"));
        assert!(!pf.verify("alice", b"one"));
        assert!(pf.verify("bob", b"two"));
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("alice:$7$101$"), "{text}");
        run(&parse(&["-D", fp, "alice"]).unwrap()).unwrap();
        let pf = PasswordFile::load(&f).unwrap();
        assert!(!pf.contains("alice") && pf.contains("bob"));
        // -c replaces the whole file.
        run(&parse(&["-c", "-b", fp, "carol", "four"]).unwrap()).unwrap();
        let pf = PasswordFile::load(&f).unwrap();
        assert_eq!(pf.users().collect::<Vec<_>>(), ["carol"]);
    }

    #[cfg(unix)]
    #[test]
    fn written_file_has_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        run(&parse(&["-c", "-b", path_str(&f), "u", "p"]).unwrap()).unwrap();
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn deleting_a_missing_user_fails_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        run(&parse(&["-c", "-b", path_str(&f), "u", "p"]).unwrap()).unwrap();
        let before = fs::read(&f).unwrap();
        let e = run(&parse(&["-D", path_str(&f), "nobody"]).unwrap()).unwrap_err();
        assert!(matches!(e, PasswdError::UserNotFound { .. }), "{e}");
        assert_eq!(fs::read(&f).unwrap(), before);
    }

    #[test]
    fn updating_needs_an_existing_well_formed_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        let e = run(&parse(&["-b", path_str(&f), "u", "p"]).unwrap()).unwrap_err();
        assert!(
            matches!(e, PasswdError::File(PasswordFileError::Io { .. })),
            "{e}"
        );
        fs::write(&f, "# ok\nu:plaintext\n").unwrap();
        let e = run(&parse(&["-b", path_str(&f), "v", "p"]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert_eq!(fs::read_to_string(&f).unwrap(), "# ok\nu:plaintext\n");
    }

    #[test]
    fn user_names_that_would_not_read_back_are_refused() {
        for bad in ["", "a:b", "#admin", " pad", "pad ", "tab\there", "nl\n"] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "ünï cödé", "a#b", "a b"] {
            assert!(validate_user(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn empty_password_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        let e = run(&parse(&["-c", "-b", path_str(&f), "u", ""]).unwrap()).unwrap_err();
        assert!(matches!(e, PasswdError::InvalidPassword(_)), "{e}");
        assert!(!f.exists());
    }

    #[test]
    fn password_line_from_stdin_loses_only_its_line_end() {
        let mut r = io::Cursor::new(b"s3cret pass\r\nsecond line\n".to_vec());
        assert_eq!(read_password_line(&mut r).unwrap(), b"s3cret pass");
        let mut r = io::Cursor::new(b"no newline".to_vec());
        assert_eq!(read_password_line(&mut r).unwrap(), b"no newline");
        let mut r = io::Cursor::new(Vec::new());
        assert_eq!(read_password_line(&mut r).unwrap(), b"");
    }

    #[test]
    fn option_combinations_follow_mosquitto_passwd() {
        assert!(parse(&["-c", "-D", "f", "u"]).is_err(), "-c with -D");
        assert!(parse(&["-D", "-b", "f", "u", "p"]).is_err(), "-D with -b");
        assert!(parse(&["-b", "f", "u"]).is_err(), "-b needs a password");
        assert!(parse(&["f", "u", "p"]).is_err(), "a password needs -b");
        assert!(parse(&["-b", "--password-stdin", "f", "u", "p"]).is_err());
        let a = parse(&["-c", "--password-stdin", "f", "u"]).unwrap();
        assert!(a.create && a.password_stdin && a.password.is_none());
        let a = parse(&["-D", "f", "u"]).unwrap();
        assert!(a.delete);
    }
}
