//! The application message as the broker keeps it: in memory (shared by every queue it sits
//! in) and on disk (postcard). Protocol-independent: MQTT 3 and 5 publishes both become one.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// MQTT 5 properties that travel with a message from publisher to subscriber.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProps {
    pub payload_is_utf8: Option<bool>,
    pub response_topic: Option<Arc<str>>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(Arc<str>, Arc<str>)>,
    pub content_type: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// Unix milliseconds when the broker received it; the base of message expiry.
    pub received_ms: u64,
    /// Message Expiry Interval as published, in seconds.
    pub expiry_secs: Option<u32>,
    /// Client id of the publisher, for the no-local option. Empty for broker-made messages.
    pub publisher: Arc<str>,
    /// Set for messages that came down from the cloud: they are never forwarded back up.
    pub from_downlink: bool,
    pub props: Option<Box<MessageProps>>,
}

impl Message {
    /// Seconds left before expiry at `now_ms`: `None` = never expires, `Some(0)` = expired.
    pub fn remaining_expiry(&self, now_ms: u64) -> Option<u32> {
        let secs = self.expiry_secs?;
        let elapsed = now_ms.saturating_sub(self.received_ms) / 1000;
        Some((secs as u64).saturating_sub(elapsed) as u32)
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.remaining_expiry(now_ms) == Some(0)
    }

    /// Approximate bytes held, for queue byte bounds.
    pub fn weight(&self) -> usize {
        self.payload.len() + self.topic.len() + 64
    }
}

pub use edge_mqtt::util::now_ms;

/// Messages for unit tests: received now from `publisher`, no expiry, no properties.
#[cfg(test)]
impl Message {
    pub(crate) fn test(
        topic: impl Into<Arc<str>>,
        payload: impl Into<Bytes>,
        qos: u8,
        publisher: impl Into<Arc<str>>,
    ) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            received_ms: now_ms(),
            expiry_secs: None,
            publisher: publisher.into(),
            from_downlink: false,
            props: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_down_from_receipt() {
        let m = Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: 1,
            retain: false,
            received_ms: 10_000,
            expiry_secs: Some(5),
            publisher: "".into(),
            from_downlink: false,
            props: None,
        };
        assert_eq!(m.remaining_expiry(10_000), Some(5));
        assert_eq!(m.remaining_expiry(12_500), Some(3));
        assert!(m.is_expired(15_000));
        assert!(!m.is_expired(14_999));
    }
}
