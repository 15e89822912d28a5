//! MQTT plumbing shared by the broker (`edge`), the sync module (`sync`) and `edge-bench`: one
//! remaining-length decoder and frame sizing, the v3 <-> v5 lifting (`version`), reason codes as
//! received (`reason`), topic name / filter rules and matching, packet-id allocation, and small
//! runtime helpers. The codec itself is mqtt-proto (patched copy in `vendor/mqtt-proto`); this
//! crate holds what every user of the codec needed around it.

pub mod frame;
pub mod pid;
pub mod reason;
pub mod topic;
pub mod util;
pub mod version;

pub use mqtt_proto;
