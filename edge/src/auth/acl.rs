//! mosquitto's `acl_file` syntax and mosquitto 2.x's decision: the user's (or anonymous) rules, then
//! `pattern` rules with `%u`/`%c`; in each a matching `deny` beats any grant. Invariants: `$SYS` is
//! never writable; [`ClientAcl`] checks allocate nothing and agree with [`Acl::check`].

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use edge_mqtt::topic::{matches, split_shared};

mod tree;
use tree::{Rule, RuleSet};

/// What a client wants to do with a topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive a message on this topic name (routed or retained delivery).
    Read,
    /// Publish on this topic name (PUBLISH, and a will when it is published).
    Write,
    /// Subscribe with this filter (`$share/{group}/` is checked as the filter after it).
    Subscribe,
}

/// Who is asking: the authenticated user name (None for anonymous) and the client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

const DENY: u8 = 1;
const READ: u8 = 2;
const WRITE: u8 = 4;
/// mosquitto's TOPIC_HIERARCHY_LIMIT: at most this many `/` in an ACL topic.
const MAX_SEPARATORS: usize = 200;

/// A parse or read error: the file, and for a bad line its 1-based number.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("acl file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("acl file {} line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl AclError {
    /// The 1-based line of a syntax error; None for an I/O error.
    pub fn line(&self) -> Option<usize> {
        match self {
            AclError::Io { .. } => None,
            AclError::Syntax { line, .. } => Some(*line),
        }
    }
}

/// A parsed ACL file. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Acl {
    path: PathBuf,
    /// Rules before the first `user` line: they apply to clients without a user name.
    anonymous: Option<Arc<RuleSet>>,
    users: HashMap<String, Arc<RuleSet>>,
    /// `pattern` rules, deny first, with `%u`/`%c` not yet substituted.
    patterns: Vec<Rule>,
    warnings: Vec<String>,
    rule_count: usize,
    generation: u64,
}

/// Stamps each parsed ACL, so a connection can tell its [`ClientAcl`] is from an older one.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// C's isspace() in the "C" locale.
fn c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// mosquitto_sub_topic_check(): `+` and `#` alone in their level, `#` last, at most 65535 bytes
/// and 200 separators.
fn valid_acl_topic(t: &str) -> bool {
    if t.is_empty() || t.len() > 65535 || t.matches('/').count() > MAX_SEPARATORS {
        return false;
    }
    let mut levels = t.split('/').peekable();
    while let Some(l) = levels.next() {
        if (l.contains('#') && (l != "#" || levels.peek().is_some()))
            || (l.contains('+') && l != "+")
        {
            return false;
        }
    }
    true
}

/// Writes `pattern` with `%c` replaced by the client id and `%u` by the user name (when there
/// is one), anywhere in the string, exactly as mosquitto substitutes.
fn substitute(pattern: &str, client: &ClientIdentity<'_>, out: &mut String) {
    out.clear();
    let b = pattern.as_bytes();
    let (mut i, mut start) = (0, 0);
    while i + 1 < b.len() {
        if b[i] == b'%' {
            let with = match (b[i + 1], client.username) {
                (b'c', _) => Some(client.client_id),
                (b'u', Some(u)) => Some(u),
                _ => None,
            };
            if let Some(w) = with {
                out.push_str(&pattern[start..i]);
                out.push_str(w);
                i += 2;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&pattern[start..]);
}

/// mosquitto refuses every pattern-rule decision to a client whose user name or id holds a
/// wildcard: substituted into a pattern it would widen the rule.
fn wildcard_identity(client: &ClientIdentity<'_>) -> bool {
    client.username.is_some_and(|u| u.contains(['+', '#'])) || client.client_id.contains(['+', '#'])
}

/// Decisions that no ACL can change (mosquitto's acl__check_dollar): `$SYS` topics are never
/// writable by clients, and `$share/...` is never a topic name to publish to or receive on.
fn builtin_denial(topic: &str, access: Access) -> bool {
    match access {
        Access::Write => topic.starts_with("$SYS") || topic.starts_with("$share"),
        Access::Read => topic.starts_with("$share"),
        Access::Subscribe => false,
    }
}

/// A topic name fit for a read/write check: what mosquitto's matcher would not reject.
fn checkable_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

/// The first level of a filter may match `$` topics only if it is not a wildcard.
fn wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// True when some topic name matches both filters.
fn intersects(a: &str, b: &str) -> bool {
    let (fa, fb) = (a.split('/').next(), b.split('/').next());
    if let (Some(fa), Some(fb)) = (fa, fb) {
        // A `$` topic is matched only by a filter whose first level names it literally.
        if (fa.starts_with('$') && wild(fb)) || (fb.starts_with('$') && wild(fa)) {
            return false;
        }
    }
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            // One filter is longer: only a trailing `#` (also matching its parent) could meet it.
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

/// True when every topic name matched by `filter` is matched by `rule` too.
fn covers(rule: &str, filter: &str) -> bool {
    if let (Some(r0), Some(f0)) = (rule.split('/').next(), filter.split('/').next()) {
        if wild(r0) && f0.starts_with('$') {
            return false;
        }
    }
    let (mut r, mut f) = (rule.split('/'), filter.split('/'));
    loop {
        match (r.next(), f.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            // `a/#` covers `a` too.
            (Some(rest), None) => return rest == "#" && r.next().is_none(),
            (None, Some(_)) => return false,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(p), Some(q)) if p == q && !wild(q) => {}
            _ => return false,
        }
    }
}

impl Acl {
    /// Reads and parses an ACL file.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let bytes = std::fs::read(path).map_err(|source| AclError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Acl::parse(&text, path),
            Err(e) => {
                let upto = e.utf8_error().valid_up_to();
                let line = e.as_bytes()[..upto].iter().filter(|b| **b == b'\n').count() + 1;
                Err(AclError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    message: "not valid UTF-8".into(),
                })
            }
        }
    }

    /// Parses ACL text as mosquitto's aclfile__parse() does; `path` only names the file in
    /// errors. Lines: `# comment` (in the first column), blank, `user NAME`,
    /// `topic [read|write|readwrite|deny] TOPIC`, `pattern [read|write|readwrite|deny] TOPIC`.
    /// Words are separated by spaces (not tabs); the topic is the rest of the line, so it may
    /// hold spaces when the access word is given.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclError> {
        let err = |line: usize, message: String| AclError::Syntax {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut anonymous = RuleSet::default();
        let mut users: HashMap<String, RuleSet> = HashMap::new();
        let mut patterns: Vec<Rule> = Vec::new();
        let mut user: Option<String> = None;
        let mut warnings = Vec::new();
        let mut rule_count = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            let line = raw.trim_end_matches(c_space);
            if line.starts_with('#') {
                continue;
            }
            let rest = line.trim_start_matches(' ');
            if rest.is_empty() {
                continue;
            }
            let (word, after) = match rest.split_once(' ') {
                Some((w, a)) => (w, a),
                None => (rest, ""),
            };
            match word {
                "topic" | "pattern" => {
                    let after = after.trim_start_matches(' ');
                    let (access_word, topic) = match after.split_once(' ') {
                        Some((a, t)) => (Some(a), t.trim_matches(c_space)),
                        // `topic foo`: the access word is optional, readwrite by default.
                        None => (None, after),
                    };
                    if topic.is_empty() {
                        return Err(err(n, format!("empty topic in `{word}` line")));
                    }
                    let flags = match access_word {
                        None | Some("readwrite") => READ | WRITE,
                        Some("read") => READ,
                        Some("write") => WRITE,
                        Some("deny") => DENY,
                        Some(other) => {
                            return Err(err(
                                n,
                                format!(
                                    "invalid access type {other:?} (read, write, readwrite or deny)"
                                ),
                            ))
                        }
                    };
                    if !valid_acl_topic(topic) {
                        return Err(err(n, format!("invalid ACL topic {topic:?}")));
                    }
                    let rule = Rule {
                        topic: topic.into(),
                        flags,
                    };
                    rule_count += 1;
                    if word == "pattern" {
                        if !topic.contains("%c") && !topic.contains("%u") {
                            warnings.push(format!(
                                "acl file {} line {n}: pattern {topic:?} contains neither %c nor %u",
                                path.display()
                            ));
                        }
                        if flags & DENY != 0 {
                            patterns.insert(0, rule);
                        } else {
                            patterns.push(rule);
                        }
                    } else {
                        match &user {
                            None => anonymous.push(rule),
                            Some(u) => users.entry(u.clone()).or_default().push(rule),
                        }
                    }
                }
                "user" => {
                    let name = after.trim_matches(c_space);
                    if name.is_empty() {
                        return Err(err(n, "missing user name after `user`".into()));
                    }
                    user = Some(name.to_string());
                }
                _ => {
                    return Err(err(
                        n,
                        format!(
                            "invalid line (expected user, topic, pattern or a # comment): {line:?}"
                        ),
                    ))
                }
            }
        }
        Ok(Acl {
            path: path.to_path_buf(),
            anonymous: (!anonymous.rules.is_empty()).then(|| Arc::new(anonymous)),
            users: users.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            patterns,
            warnings,
            rule_count,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The file this ACL was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Non-fatal remarks mosquitto also logs (a pattern without `%c` or `%u`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of `topic` and `pattern` lines.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Unique per parsed ACL (never 0): a [`ClientAcl`] with another generation is stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn user_rules(&self, client: &ClientIdentity<'_>) -> Option<&Arc<RuleSet>> {
        match client.username {
            Some(u) => self.users.get(u),
            None => self.anonymous.as_ref(),
        }
    }

    /// The decision for one check, computed from the rules as mosquitto walks them (allocates
    /// for `%u`/`%c` substitution). On the hot path use [`Acl::client`] once per connection and
    /// [`ClientAcl::check`] per message: same answers, no allocation.
    pub fn check(&self, client: &ClientIdentity<'_>, topic: &str, access: Access) -> bool {
        if builtin_denial(topic, access) {
            return false;
        }
        let bit = match access {
            Access::Read => READ,
            Access::Write => WRITE,
            Access::Subscribe => return self.client(client).check(topic, access),
        };
        if !checkable_topic(topic) {
            return false;
        }
        if let Some(set) = self.user_rules(client) {
            for rule in &set.rules {
                if matches(&rule.topic, topic) {
                    if rule.flags & DENY != 0 {
                        return false;
                    }
                    if rule.flags & bit != 0 {
                        return true;
                    }
                }
            }
        }
        if self.patterns.is_empty() || wildcard_identity(client) {
            return false;
        }
        let mut buf = String::new();
        for rule in &self.patterns {
            if client.username.is_none() && rule.topic.contains("%u") {
                continue;
            }
            substitute(&rule.topic, client, &mut buf);
            if matches(&buf, topic) {
                if rule.flags & DENY != 0 {
                    return false;
                }
                if rule.flags & bit != 0 {
                    return true;
                }
            }
        }
        false
    }

    /// This client's rules, resolved once (user block looked up, patterns substituted) for
    /// allocation-free checks. A snapshot: after a reload, build it again from the new ACL.
    pub fn client(&self, client: &ClientIdentity<'_>) -> ClientAcl {
        let has_patterns = !self.patterns.is_empty();
        let dangerous = has_patterns && wildcard_identity(client);
        let mut patterns = RuleSet::default();
        if has_patterns && !dangerous {
            let mut buf = String::new();
            for rule in &self.patterns {
                if client.username.is_none() && rule.topic.contains("%u") {
                    continue;
                }
                substitute(&rule.topic, client, &mut buf);
                patterns.push(Rule {
                    topic: buf.as_str().into(),
                    flags: rule.flags,
                });
            }
        }
        ClientAcl {
            rules: Some(Box::new(ClientRules {
                generation: self.generation,
                user: self.user_rules(client).cloned(),
                patterns,
                has_patterns,
                dangerous,
                last: None,
            })),
        }
    }
}

#[derive(Debug, Clone)]
struct ClientRules {
    /// The [`Acl::generation`] these were built from (never 0).
    generation: u64,
    user: Option<Arc<RuleSet>>,
    /// Substituted for this client; empty when the ACL has none or the client is `dangerous`.
    patterns: RuleSet,
    has_patterns: bool,
    dangerous: bool,
    /// The last topic [`ClientAcl::check_cached`] was asked about, the access and the answer
    /// (a client mostly publishes, or is sent, the same few topics). Here rather than in every
    /// connection and session: without rules a check is a prefix test and needs no cache.
    last: Option<(Arc<str>, Access, bool)>,
}

/// One client's view of an ACL (or of no ACL at all), for the per-message checks.
#[derive(Debug, Clone)]
pub struct ClientAcl {
    /// None: no ACL file, everything allowed but the built-in `$SYS`/`$share` denials. Boxed
    /// with the generation: every connection and session holds a `ClientAcl` (8 bytes), most
    /// of them without rules.
    rules: Option<Box<ClientRules>>,
}

impl ClientAcl {
    /// A client on a broker without an ACL file: only the built-in denials apply.
    pub fn unrestricted() -> ClientAcl {
        ClientAcl { rules: None }
    }

    /// The generation of the [`Acl`] this was built from (0: none). After a reload, a
    /// connection whose `ClientAcl` has another generation than the current ACL rebuilds it.
    pub fn generation(&self) -> u64 {
        self.rules.as_ref().map_or(0, |r| r.generation)
    }

    /// `acl.client(identity)`, or [`ClientAcl::unrestricted`] when there is no ACL.
    pub fn new(acl: Option<&Acl>, client: &ClientIdentity<'_>) -> ClientAcl {
        match acl {
            Some(a) => a.client(client),
            None => ClientAcl::unrestricted(),
        }
    }

    /// May this client read/write `topic` (a topic name), or subscribe with it (a filter)?
    ///
    /// Read/Write follow mosquitto 2.x exactly: first this user's (or the anonymous) rules, a
    /// matching `deny` refusing and a matching grant of the access allowing; if they decide
    /// nothing, the `pattern` rules the same way; otherwise refused.
    ///
    /// Subscribe: mosquitto 2.x's acl_file never refuses a subscription (it only filters what
    /// is delivered). Here a filter is refused when no topic it matches could ever be read:
    /// a `deny` rule covers the whole filter, or no rule granting read overlaps it. Delivery
    /// is still checked per message with [`Access::Read`], so a `#` subscriber receives only
    /// the topics it may read.
    pub fn check(&self, topic: &str, access: Access) -> bool {
        if builtin_denial(topic, access) {
            return false;
        }
        let Some(r) = &self.rules else {
            return true;
        };
        let bit = match access {
            Access::Read => READ,
            Access::Write => WRITE,
            Access::Subscribe => return r.subscribe(topic),
        };
        if !checkable_topic(topic) {
            return false;
        }
        let dollar = topic.starts_with('$');
        if let Some(set) = &r.user {
            let flags = set.tree.collect(topic.split('/'), dollar);
            if flags & DENY != 0 {
                return false;
            }
            if flags & bit != 0 {
                return true;
            }
        }
        if !r.has_patterns || r.dangerous || r.patterns.tree.is_empty() {
            return false;
        }
        let flags = r.patterns.tree.collect(topic.split('/'), dollar);
        flags & DENY == 0 && flags & bit != 0
    }

    /// [`ClientAcl::check`] remembering the last answer when there are rules to walk.
    pub fn check_cached(&mut self, topic: &Arc<str>, access: Access) -> bool {
        let answer = match &self.rules {
            None => return self.check(topic, access),
            Some(r) => match &r.last {
                Some((t, a, ok)) if *a == access && (Arc::ptr_eq(t, topic) || **t == **topic) => {
                    return *ok
                }
                _ => self.check(topic, access),
            },
        };
        if let Some(r) = &mut self.rules {
            r.last = Some((topic.clone(), access, answer));
        }
        answer
    }
}

impl ClientRules {
    fn subscribe(&self, filter: &str) -> bool {
        let (_, filter) = split_shared(filter);
        if !valid_acl_topic(filter) {
            return false;
        }
        if let Some(set) = &self.user {
            if set
                .rules
                .iter()
                .any(|r| r.flags & DENY != 0 && covers(&r.topic, filter))
            {
                return false;
            }
            if set
                .rules
                .iter()
                .any(|r| r.grants(READ) && intersects(&r.topic, filter))
            {
                return true;
            }
        }
        if !self.has_patterns || self.dangerous {
            return false;
        }
        let rules = &self.patterns.rules;
        !rules
            .iter()
            .any(|r| r.flags & DENY != 0 && covers(&r.topic, filter))
            && rules
                .iter()
                .any(|r| r.grants(READ) && intersects(&r.topic, filter))
    }
}

#[cfg(test)]
mod tests;
