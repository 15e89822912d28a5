//! mosquitto's `acl_file` syntax and mosquitto 2.x's decision: the user's (or anonymous) rules, then
//! `pattern` rules with `%u`/`%c`; in each a matching `deny` beats any grant. Invariants: `$SYS` is
//! never writable; [`ClientAcl`] checks allocate nothing and agree with [`Acl::check`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use edge_mqtt::topic::{matches, split_shared};

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

/// One `topic`/`pattern` line: its filter (for patterns, before substitution) and access bits.
#[derive(Debug, Clone)]
struct Rule {
    topic: Box<str>,
    /// `DENY`, or a non-empty set of `READ`/`WRITE`.
    flags: u8,
}

impl Rule {
    fn grants(&self, bit: u8) -> bool {
        self.flags & DENY == 0 && self.flags & bit != 0
    }
}

/// Rules that apply to one user (or to anonymous clients), with their lookup tree.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    /// In mosquitto's checking order: `deny` rules first, then the rest in file order.
    rules: Vec<Rule>,
    tree: Node,
}

impl RuleSet {
    fn push(&mut self, rule: Rule) {
        self.tree.insert(&rule.topic, rule.flags);
        if rule.flags & DENY != 0 {
            // mosquitto puts each new deny at the front of the list.
            self.rules.insert(0, rule);
        } else {
            self.rules.push(rule);
        }
    }
}

/// FNV-1a for the tree's level keys: they come from the trusted ACL file and lookups never
/// insert, so a client cannot grow a collision chain; much cheaper than SipHash per level.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A tree of filters keyed by level; each node carries the access bits of the rules ending
/// there (`end`) or ending with `#` below it (`hash`).
#[derive(Debug, Clone, Default)]
struct Node {
    end: u8,
    hash: u8,
    plus: Option<Box<Node>>,
    children: HashMap<Box<str>, Node, BuildHasherDefault<Fnv>>,
}

impl Node {
    fn insert(&mut self, filter: &str, flags: u8) {
        let mut node = self;
        for level in filter.split('/') {
            match level {
                "#" => {
                    node.hash |= flags;
                    return;
                }
                "+" => node = node.plus.get_or_insert_with(Box::default),
                l => node = node.children.entry(l.into()).or_default(),
            }
        }
        node.end |= flags;
    }

    /// Union of the bits of every rule whose filter matches the rest of a topic. At the root of
    /// a `$` topic, `#` and `+` do not match (MQTT 4.7.2, and mosquitto).
    fn collect(&self, mut levels: std::str::Split<'_, char>, dollar_root: bool) -> u8 {
        let mut acc = if dollar_root { 0 } else { self.hash };
        match levels.next() {
            None => acc |= self.end,
            Some(level) => {
                if let Some(child) = self.children.get(level) {
                    acc |= child.collect(levels.clone(), false);
                }
                if !dollar_root {
                    if let Some(p) = &self.plus {
                        acc |= p.collect(levels, false);
                    }
                }
            }
        }
        acc
    }

    fn is_empty(&self) -> bool {
        self.end == 0 && self.hash == 0 && self.plus.is_none() && self.children.is_empty()
    }
}

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
            generation: self.generation,
            rules: Some(Box::new(ClientRules {
                user: self.user_rules(client).cloned(),
                patterns,
                has_patterns,
                dangerous,
            })),
        }
    }
}

#[derive(Debug, Clone)]
struct ClientRules {
    user: Option<Arc<RuleSet>>,
    /// Substituted for this client; empty when the ACL has none or the client is `dangerous`.
    patterns: RuleSet,
    has_patterns: bool,
    dangerous: bool,
}

/// One client's view of an ACL (or of no ACL at all), for the per-message checks.
#[derive(Debug, Clone)]
pub struct ClientAcl {
    /// The [`Acl::generation`] this was built from; 0 for [`ClientAcl::unrestricted`].
    generation: u64,
    /// None: no ACL file, everything allowed but the built-in `$SYS`/`$share` denials. Boxed:
    /// every connection and session holds a `ClientAcl`, most of them without rules.
    rules: Option<Box<ClientRules>>,
}

impl ClientAcl {
    /// A client on a broker without an ACL file: only the built-in denials apply.
    pub fn unrestricted() -> ClientAcl {
        ClientAcl {
            generation: 0,
            rules: None,
        }
    }

    /// The generation of the [`Acl`] this was built from (0: none). After a reload, a
    /// connection whose `ClientAcl` has another generation than the current ACL rebuilds it.
    pub fn generation(&self) -> u64 {
        self.generation
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
mod tests {
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
        let a =
            acl("user a+b\ntopic readwrite x\npattern readwrite q/%c\npattern readwrite open/+\n");
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
        assert!(intersects("a/+", "+/b"));
        assert!(intersects("a/#", "a"));
        assert!(intersects("#", "x/y"));
        assert!(!intersects("a/b", "a/c"));
        assert!(!intersects("a/b/c", "a/b"));
        assert!(!intersects("#", "$SYS/x"));
        assert!(intersects("$SYS/#", "$SYS/+"));
        assert!(!intersects("+/x", "$SYS/x"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("+/+", "+/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/a"));
        assert!(covers("#", "#"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("a/b/#", "a"));
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
}
