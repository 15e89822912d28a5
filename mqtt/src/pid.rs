//! Packet identifier allocation (MQTT 5.0 2.2.1): non-zero, and not in use by another QoS 1/2
//! exchange in the same direction of the same session. The caller says which ids are in use;
//! the allocator only remembers where to continue, so ids cycle through the whole range.

use mqtt_proto::Pid;

/// Hands out packet ids in increasing order, wrapping from 65535 to 1, skipping ids in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidAllocator {
    next: u16,
}

impl Default for PidAllocator {
    fn default() -> Self {
        PidAllocator { next: 1 }
    }
}

impl PidAllocator {
    /// An allocator whose next id is `first` (0 is read as 1).
    pub fn starting_at(first: u16) -> Self {
        PidAllocator { next: first.max(1) }
    }

    /// The next id for which `in_use` is false; `None` when all 65,535 ids are in use.
    pub fn next(&mut self, in_use: impl Fn(u16) -> bool) -> Option<Pid> {
        for _ in 0..u16::MAX {
            let p = self.next;
            self.next = if p == u16::MAX { 1 } else { p + 1 };
            if !in_use(p) {
                return Pid::try_from(p).ok();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_and_skip_those_in_use() {
        let mut a = PidAllocator::default();
        assert_eq!(a.next(|_| false).map(|p| p.value()), Some(1));
        assert_eq!(a.next(|p| p == 2 || p == 3).map(|p| p.value()), Some(4));
    }

    #[test]
    fn ids_wrap_from_65535_to_1_never_0() {
        let mut a = PidAllocator { next: u16::MAX };
        assert_eq!(a.next(|_| false).map(|p| p.value()), Some(u16::MAX));
        assert_eq!(a.next(|_| false).map(|p| p.value()), Some(1));
    }

    #[test]
    fn a_full_id_space_gives_none() {
        let mut a = PidAllocator::default();
        assert_eq!(a.next(|_| true), None);
    }
}
