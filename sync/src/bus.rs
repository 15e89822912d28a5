//! The broker's side of the downlink: the message type and the trait through which cloud messages
//! (and the local status) are handed to local subscribers. A leaf module: the shared task context
//! and the downlink both use it, so neither has to import the other.

/// A cloud message for local subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct DownMessage {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub qos: u8,
    pub retain: bool,
    pub user_properties: Vec<(String, String)>,
}

/// The broker's side of the downlink.
pub trait LocalBus: Send + Sync + 'static {
    /// Deliver a message to local subscribers; resolves once the broker accepted (and for QoS>0
    /// durably stored) it.
    fn publish(&self, msg: DownMessage) -> futures_lite::future::Boxed<Result<(), String>>;
}
