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

/// Why the broker did not take a cloud message.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker stopped")]
    Stopped,
    #[error("quota exceeded")]
    QuotaExceeded,
    #[error("not accepted")]
    NotAccepted,
    #[error("timed out")]
    TimedOut,
    /// The commit that was to store it failed; the broker's error is the source.
    #[error("not stored: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The broker's side of the downlink.
pub trait LocalBus: Send + Sync + 'static {
    /// Deliver a message to local subscribers; resolves once the broker accepted (and for QoS>0
    /// durably stored) it.
    fn publish(&self, msg: DownMessage) -> futures_lite::future::Boxed<Result<(), BusError>>;
}
