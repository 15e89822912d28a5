//! Topic names and filters as MQTT 5.0 section 4.7 defines them: validity of a filter, matching a
//! topic against a filter (`$`-topics never matched by a leading wildcard), and splitting a
//! shared subscription `$share/{group}/{filter}`. Pure functions; no allocation when matching.

/// True when `f` is a syntactically valid topic filter (`#` alone and last, `+` alone in a level).
pub fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.len() > 65535 || f.contains('\0') {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(l) = levels.next() {
        if l.contains('#') && (l != "#" || levels.peek().is_some()) {
            return false;
        }
        if l.contains('+') && l != "+" {
            return false;
        }
    }
    true
}

/// True when `t` is a valid topic name (non-empty, no wildcard, no NUL).
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 65535 && !t.contains(['+', '#', '\0'])
}

/// Filter matching; `$`-topics are only matched by filters whose first level is not a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `$share/group/filter` -> `(Some(group), filter)`; any other filter -> `(None, filter)`.
pub fn split_shared(filter: &str) -> (Option<&str>, &str) {
    if let Some(rest) = filter.strip_prefix("$share/") {
        if let Some((group, f)) = rest.split_once('/') {
            return (Some(group), f);
        }
    }
    (None, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/a"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a//c", "a//c"));
        // The examples of the spec (section 4.7.1).
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/tennis/player1"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/+", "$SYS/x"));
    }

    #[test]
    fn filter_and_topic_validity() {
        for ok in ["a", "a/+/b", "#", "a/#", "+", "/"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "a\0"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
        assert!(valid_topic("a/b"));
        assert!(!valid_topic("a/+"));
        assert!(!valid_topic(""));
    }

    #[test]
    fn shared_subscriptions_split_into_group_and_filter() {
        assert_eq!(split_shared("$share/g/a/#"), (Some("g"), "a/#"));
        assert_eq!(split_shared("a/#"), (None, "a/#"));
        assert_eq!(split_shared("$share/g"), (None, "$share/g"));
    }
}
