//! The broker's sessions by client id. Each slot holds only the session's box and the session
//! is found by its own `client_id` (8 bytes a slot where a map keyed by a copy of the id takes
//! 24: about 26 bytes per connection at 10,000 sessions, with the table's spare slots).
//! Invariant: a session is stored under its own client id, at most one per id.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
// `hashbrown::HashTable` (the table behind std's `HashMap`) stores values found by a key
// they hold themselves, which std's maps and sets cannot do with a lookup by `&str`.
use hashbrown::HashTable;

use crate::session::Session;

#[derive(Default)]
pub(super) struct SessionTable {
    table: HashTable<Box<Session>>,
    hasher: RandomState,
}

impl SessionTable {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    pub(super) fn get(&self, id: &str) -> Option<&Session> {
        self.table
            .find(self.hash(id), |s| &**s.client_id() == id)
            .map(|s| &**s)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Session> {
        let hash = self.hash(id);
        self.table
            .find_mut(hash, |s| &**s.client_id() == id)
            .map(|s| &mut **s)
    }

    /// The session of `id`, made by `new` (which must give it that id) if there is none.
    pub(super) fn get_or_insert_with(
        &mut self,
        id: &str,
        new: impl FnOnce() -> Box<Session>,
    ) -> &mut Session {
        let hash = self.hash(id);
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |s| &**s.client_id() == id,
            |s| hasher.hash_one(&**s.client_id()),
        );
        let s = entry.or_insert_with(|| {
            let s = new();
            debug_assert_eq!(&**s.client_id(), id);
            s
        });
        s.into_mut()
    }

    /// Stores `s` under its client id, replacing (and returning) the session stored there.
    pub(super) fn insert(&mut self, s: Box<Session>) -> Option<Box<Session>> {
        let old = self.remove(s.client_id());
        let hash = self.hash(s.client_id());
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, s, |s| hasher.hash_one(&**s.client_id()));
        old
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Box<Session>> {
        let hash = self.hash(id);
        match self.table.find_entry(hash, |s| &**s.client_id() == id) {
            Ok(e) => Some(e.remove().0),
            Err(_) => None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Session> {
        self.table.iter().map(|s| &**s)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.table.iter_mut().map(|s| &mut **s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn session(id: &str, expiry: u32) -> Box<Session> {
        Box::new(Session::new(Arc::from(id), 5, expiry))
    }

    #[test]
    fn sessions_are_found_replaced_and_removed_by_their_own_client_id() {
        let mut t = SessionTable::default();
        assert_eq!(t.len(), 0);
        for i in 0..1000 {
            assert!(t.insert(session(&format!("c{i}"), 0)).is_none());
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.get("c7").map(|s| s.expiry_secs()), Some(0));
        let old = t.insert(session("c7", 60)).expect("replaced");
        assert_eq!(old.expiry_secs(), 0);
        assert_eq!(t.len(), 1000);
        assert_eq!(t.get_mut("c7").map(|s| s.expiry_secs()), Some(60));
        assert!(t.get("nope").is_none());
        assert_eq!(t.remove("c7").map(|s| s.expiry_secs()), Some(60));
        assert!(t.remove("c7").is_none());
        assert!(t.get("c7").is_none());
        assert_eq!(t.len(), 999);
        let made = t.get_or_insert_with("c7", || session("c7", 5));
        assert_eq!(made.expiry_secs(), 5);
        let found = t.get_or_insert_with("c8", || unreachable!("c8 exists"));
        assert_eq!(found.client_id().as_ref(), "c8");
        assert_eq!(t.values().count(), 1000);
        assert_eq!(t.values_mut().count(), 1000);
    }
}
