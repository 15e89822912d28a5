//! Topic filters and the subscription tree.
//!
//! The tree is keyed by filter level, so matching a topic costs its depth, not the number of
//! subscriptions. Empty nodes are pruned on unsubscribe: memory follows live subscriptions only.

use std::collections::HashMap;
use std::sync::Arc;

/// Per-subscription options (MQTT 5 names; MQTT 3 subscriptions use the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubOptions {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    /// v5 Subscription Identifier, 0 when absent.
    pub id: u32,
}

/// One entry in the tree: a session's subscription, possibly part of a shared group.
#[derive(Debug, Clone)]
struct Entry {
    client: Arc<str>,
    group: Option<Arc<str>>,
    opts: SubOptions,
}

#[derive(Default, Debug)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// The `+` and `#` children, kept apart from the map: matching looks for both at every
    /// level of every published topic, and a field costs no hashing.
    plus: Option<Box<Node>>,
    hash: Option<Box<Node>>,
    entries: Vec<Entry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.entries.is_empty()
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_new(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.plus.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.children.entry(level.into()).or_default(),
        }
    }

    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.children.remove(level);
            }
        }
    }
}

/// A subscriber chosen for one published message.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub sub_ids: Vec<u32>,
}

/// A matching shared-subscription group; the broker picks one member.
#[derive(Debug, Clone)]
pub struct SharedMatch {
    pub members: Vec<(Arc<str>, SubOptions)>,
}

#[derive(Default, Debug)]
pub struct SubscriptionTree {
    root: Node,
}

/// Topic rules shared with the sync module and edge-bench: `split_shared` splits
/// `$share/group/filter`; `matches` never lets a leading wildcard match a `$`-topic [MQTT-4.7.2-1].
pub use edge_mqtt::topic::{matches, split_shared};

impl SubscriptionTree {
    /// Adds or replaces the subscription of `client` to `filter` (which may be `$share/g/f`).
    pub fn insert(&mut self, client: &Arc<str>, filter: &str, opts: SubOptions) {
        let (group, f) = split_shared(filter);
        let mut node = &mut self.root;
        for level in f.split('/') {
            node = node.child_or_new(level);
        }
        let group: Option<Arc<str>> = group.map(Arc::from);
        if let Some(e) = node
            .entries
            .iter_mut()
            .find(|e| &e.client == client && e.group == group)
        {
            e.opts = opts;
        } else {
            node.entries.push(Entry {
                client: client.clone(),
                group,
                opts,
            });
        }
    }

    /// Removes a subscription; returns whether it existed.
    pub fn remove(&mut self, client: &str, filter: &str) -> bool {
        let (group, f) = split_shared(filter);
        let levels: Vec<&str> = f.split('/').collect();
        Self::remove_at(&mut self.root, &levels, client, group)
    }

    fn remove_at(node: &mut Node, levels: &[&str], client: &str, group: Option<&str>) -> bool {
        match levels.split_first() {
            None => {
                let before = node.entries.len();
                node.entries
                    .retain(|e| !(&*e.client == client && e.group.as_deref() == group));
                before != node.entries.len()
            }
            Some((first, rest)) => {
                let Some(child) = node.child_mut(first) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, client, group);
                if child.is_empty() {
                    node.remove_child(first);
                }
                removed
            }
        }
    }

    /// Collects the subscribers of `topic`: direct ones merged per client (highest QoS, every
    /// subscription identifier, sorted by client id), and each matching shared group
    /// separately. Direct matches are gathered in a list and merged after a sort: a publish
    /// usually matches a few clients, and a hash map per publish (its table, a SipHash of
    /// each client id) cost ~300 of the ~2,000 instructions per message this took in a
    /// backlog fill (callgrind).
    pub fn collect(&self, topic: &str) -> (Vec<(Arc<str>, Target)>, Vec<SharedMatch>) {
        let mut direct: Vec<(Arc<str>, Target)> = Vec::new();
        let mut groups: HashMap<(Arc<str>, usize), SharedMatch> = HashMap::new();
        let dollar = topic.starts_with('$');
        let mut visit = |node: &Node| {
            for e in &node.entries {
                match &e.group {
                    None => direct.push((
                        e.client.clone(),
                        Target {
                            qos: e.opts.qos,
                            no_local: e.opts.no_local,
                            retain_as_published: e.opts.retain_as_published,
                            sub_ids: match e.opts.id {
                                0 => Vec::new(),
                                id => vec![id],
                            },
                        },
                    )),
                    Some(g) => {
                        // A group is identified by its name and the node (filter) it sits on.
                        let key = (g.clone(), node as *const Node as usize);
                        groups
                            .entry(key)
                            .or_insert_with(|| SharedMatch {
                                members: Vec::new(),
                            })
                            .members
                            .push((e.client.clone(), e.opts));
                    }
                }
            }
        };
        Self::walk(&self.root, topic.split('/'), 0, dollar, &mut visit);
        if direct.len() > 1 {
            // Stable: a client's subscription ids keep the order their nodes were visited in.
            direct.sort_by(|a, b| a.0.cmp(&b.0));
            direct.dedup_by(|later, kept| {
                if later.0 != kept.0 {
                    return false;
                }
                let (t, later) = (&mut kept.1, &mut later.1);
                t.qos = t.qos.max(later.qos);
                // Delivered unless every overlapping subscription says no-local.
                t.no_local &= later.no_local;
                t.retain_as_published |= later.retain_as_published;
                for id in later.sub_ids.drain(..) {
                    if !t.sub_ids.contains(&id) {
                        t.sub_ids.push(id);
                    }
                }
                true
            });
        }
        (direct, groups.into_values().collect())
    }

    /// Visits the nodes matching the topic levels `levels` (an iterator, so that matching a
    /// publish allocates no list of its levels).
    fn walk(
        node: &Node,
        mut levels: std::str::Split<'_, char>,
        depth: usize,
        dollar: bool,
        visit: &mut impl FnMut(&Node),
    ) {
        let wild_ok = !(dollar && depth == 0);
        if wild_ok {
            if let Some(n) = node.hash.as_deref() {
                visit(n);
            }
        }
        match levels.next() {
            None => visit(node),
            Some(first) => {
                // A topic level is never `+` or `#` (topic names cannot hold wildcards), so
                // the map holds only literal levels.
                if let Some(n) = node.children.get(first) {
                    Self::walk(n, levels.clone(), depth + 1, dollar, visit);
                }
                if wild_ok {
                    if let Some(n) = node.plus.as_deref() {
                        Self::walk(n, levels, depth + 1, dollar, visit);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        fn count(n: &Node) -> usize {
            1 + n.children.values().map(count).sum::<usize>()
                + n.plus.as_deref().map_or(0, count)
                + n.hash.as_deref().map_or(0, count)
        }
        count(&self.root)
    }
}

/// Options for unit tests: `qos` and subscription id `id`, the rest as a plain subscription.
#[cfg(test)]
impl SubOptions {
    pub(crate) fn test(qos: u8, id: u32) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(qos: u8, id: u32) -> SubOptions {
        SubOptions::test(qos, id)
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        let mut t = SubscriptionTree::default();
        let c: Arc<str> = "c".into();
        t.insert(&c, "#", opts(0, 0));
        t.insert(&c, "+/x", opts(0, 0));
        assert!(t.collect("$SYS/x").0.is_empty());
        t.insert(&c, "$SYS/#", opts(1, 0));
        assert_eq!(t.collect("$SYS/x").0.len(), 1);
    }

    /// A tree with each (client, filter, QoS, subscription id) subscribed.
    fn tree(subs: &[(&str, &str, u8, u32)]) -> SubscriptionTree {
        let mut t = SubscriptionTree::default();
        for (client, filter, qos, id) in subs {
            t.insert(&Arc::from(*client), filter, opts(*qos, *id));
        }
        t
    }

    fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
        v.sort();
        v
    }

    #[test]
    fn overlapping_subscriptions_merge_to_highest_qos_with_all_ids() {
        let t = tree(&[("c", "a/#", 0, 1), ("c", "a/+", 2, 2), ("c", "a/b", 1, 0)]);
        let (direct, _) = t.collect("a/b");
        assert_eq!(direct.len(), 1, "one target per client");
        let target = &direct[0].1;
        assert_eq!(target.qos, 2);
        assert_eq!(sorted(target.sub_ids.to_vec()), vec![1, 2]);
    }

    #[test]
    fn each_client_gets_one_target_merged_from_all_its_matching_subscriptions() {
        let mut t = tree(&[
            ("b", "a/#", 0, 0),
            ("a", "a/b", 1, 7),
            ("b", "a/+", 1, 3),
            ("c", "x/#", 2, 0),
            ("a", "+/b", 0, 7),
        ]);
        let local = SubOptions {
            no_local: true,
            retain_as_published: true,
            ..opts(2, 0)
        };
        t.insert(&Arc::from("a"), "a/+", local);
        let (direct, _) = t.collect("a/b");
        let clients: Vec<&str> = direct.iter().map(|(c, _)| &**c).collect();
        assert_eq!(
            clients,
            vec!["a", "b"],
            "one target per client, c does not match"
        );
        let a = &direct[0].1;
        assert_eq!(
            (a.qos, a.sub_ids.as_slice()),
            (2, &[7][..]),
            "ids once each"
        );
        assert!(!a.no_local, "not every subscription of a says no-local");
        assert!(
            a.retain_as_published,
            "one of a's subscriptions keeps RETAIN"
        );
        let b = &direct[1].1;
        assert_eq!((b.qos, b.sub_ids.as_slice()), (1, &[3][..]));
    }

    #[test]
    fn shared_groups_are_reported_per_group() {
        let t = tree(&[
            ("a", "$share/g1/s/+", 1, 0),
            ("b", "$share/g1/s/+", 1, 0),
            ("b", "$share/g2/s/+", 1, 0),
        ]);
        let (direct, shared) = t.collect("s/x");
        assert!(direct.is_empty());
        let sizes = sorted(shared.iter().map(|g| g.members.len()).collect());
        assert_eq!(sizes, vec![1, 2]);
    }

    #[test]
    fn unsubscribe_prunes_empty_nodes() {
        let mut t = SubscriptionTree::default();
        let c: Arc<str> = "c".into();
        for i in 0..100 {
            t.insert(&c, &format!("a/{i}/b/#"), opts(0, 0));
        }
        for i in 0..100 {
            assert!(t.remove("c", &format!("a/{i}/b/#")));
        }
        assert!(!t.remove("c", "a/1/b/#"));
        assert_eq!(t.node_count(), 1);
    }

    /// `+` and `#` children live in their own slots: filters mixing them with literal levels
    /// match as the spec says and unsubscribing every one of them leaves only the root.
    #[test]
    fn wildcard_levels_match_and_are_pruned_like_literal_ones() {
        let mut t = SubscriptionTree::default();
        let filters = ["+/+/#", "a/+/c", "a/#", "+", "#", "a/b/+", "+/b/c"];
        for (i, f) in filters.iter().enumerate() {
            t.insert(&Arc::from(format!("c{i}")), f, opts(1, 0));
        }
        for topic in ["a/b/c", "a", "x/b/c", "a/b", "a/b/c/d", "/b/c", "a//c"] {
            let mut got: Vec<String> = t.collect(topic).0.iter().map(|c| c.0.to_string()).collect();
            got.sort();
            let mut want: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| matches(f, topic))
                .map(|(i, _)| format!("c{i}"))
                .collect();
            want.sort();
            assert_eq!(got, want, "topic {topic}");
        }
        for (i, f) in filters.iter().enumerate() {
            assert!(t.remove(&format!("c{i}"), f), "{f}");
        }
        assert_eq!(t.node_count(), 1);
    }
}
