//! Codec for MQTT [v3.1.1] and [v3.1]
//!
//! [v3.1.1]: http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html
//! [v3.1]: https://public.dhe.ibm.com/software/dw/webservices/ws-mqtt/mqtt-v3r1.html

mod connect;
mod packet;
mod poll;
mod publish;
mod subscribe;

#[cfg(test)]
mod tests;

pub use connect::{Connack, Connect, ConnectReturnCode, LastWill};
pub use packet::{Header, Packet, PacketType};
pub use poll::{PollPacket, PollPacketState};
pub use publish::Publish;
pub use subscribe::{Suback, Subscribe, SubscribeReturnCode, Unsubscribe};
