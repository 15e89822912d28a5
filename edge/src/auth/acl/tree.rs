//! The ACL's lookup structures: one `topic`/`pattern` rule, the rules of one user (or of
//! anonymous clients) and the level tree that answers "which access bits match this topic"
//! without allocating. Built once when the file is parsed, never changed by a lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::DENY;

/// One `topic`/`pattern` line: its filter (for patterns, before substitution) and access bits.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) topic: Box<str>,
    /// `DENY`, or a non-empty set of `READ`/`WRITE`.
    pub(super) flags: u8,
}

impl Rule {
    pub(super) fn grants(&self, bit: u8) -> bool {
        self.flags & DENY == 0 && self.flags & bit != 0
    }
}

/// Rules that apply to one user (or to anonymous clients), with their lookup tree.
#[derive(Debug, Clone, Default)]
pub(super) struct RuleSet {
    /// In mosquitto's checking order: `deny` rules first, then the rest in file order.
    pub(super) rules: Vec<Rule>,
    pub(super) tree: Node,
}

impl RuleSet {
    pub(super) fn push(&mut self, rule: Rule) {
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
pub(super) struct Node {
    end: u8,
    hash: u8,
    plus: Option<Box<Node>>,
    children: HashMap<Box<str>, Node, BuildHasherDefault<Fnv>>,
}

impl Node {
    pub(super) fn insert(&mut self, filter: &str, flags: u8) {
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
    pub(super) fn collect(&self, mut levels: std::str::Split<'_, char>, dollar_root: bool) -> u8 {
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

    pub(super) fn is_empty(&self) -> bool {
        self.end == 0 && self.hash == 0 && self.plus.is_none() && self.children.is_empty()
    }
}
