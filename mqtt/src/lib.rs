//! MQTT plumbing shared by the broker (`edge`), the sync module (`sync`) and `edge-bench`: one
//! remaining-length decoder and frame sizing, topic name / filter rules and matching, packet-id
//! allocation, and small runtime helpers. The codec itself is mqtt-proto (patched copy in
//! `vendor/mqtt-proto`); this crate holds what every user of the codec needed around it.

pub mod frame;
pub mod pid;
pub mod topic;
pub mod util;

pub use mqtt_proto;
