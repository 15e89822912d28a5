//! robustmq-edge: a small MQTT 3.1 / 3.1.1 / 5.0 broker whose acknowledged state lives in redb.

pub mod auth;
pub mod broker;
pub mod codec;
pub mod config;
pub mod connection;
pub mod disk_full;
pub mod error;
pub mod heap_trim;
pub mod http;
pub mod live_limits;
pub mod memory;
pub mod message;
pub mod proxy_protocol;
pub mod ratelog;
pub mod reload;
pub mod server;
pub mod session;
pub mod stats;
pub mod storage;
pub mod sync_bridge;
pub mod sys_topics;
pub mod systemd;
pub mod topic;
pub mod transport;
pub mod websocket;
