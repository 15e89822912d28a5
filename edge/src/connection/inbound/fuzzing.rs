//! Fuzzing entry point (feature `fuzzing`, used by `fuzz/fuzz_targets/connection.rs`): feeds
//! a byte stream, split into frames, to one connection's packet handlers, without a socket.
//! It runs the same steps as [`super::read_loop`] (frame sizing, `codec::decode`, then
//! `handle_packet`) and plays the writer's part for the replies (encoding them for the client's
//! protocol, ending the incoming exchanges they complete). Not part of the broker's API.

use std::sync::{Arc, OnceLock};

use mqtt_proto::Protocol;

use super::{handle_packet, publish};
use crate::broker::{Broker, Departure};
use crate::codec;
use crate::config::{Config, Durability};
use crate::connection::replies::{Control, Replies};
use crate::connection::Conn;
use crate::storage::Store;

/// One broker per process (opening a store per input would dominate the run time). Its data
/// folder is a fresh temporary folder; retained messages carry over from input to input.
fn broker() -> &'static Arc<Broker> {
    static BROKER: OnceLock<Arc<Broker>> = OnceLock::new();
    BROKER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edge-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = Config {
            data_dir: dir,
            durability: Durability::None,
            ..Config::default()
        };
        // No writer drains the session here: keep the publisher flow control (a wait of up to
        // five seconds on a congested subscriber) out of reach of one input.
        cfg.limits.max_queued_messages = 1 << 20;
        cfg.limits.max_queued_bytes = 1 << 30;
        let (store, loaded) = Store::open(&cfg).expect("open fuzzing store");
        Broker::new(Arc::new(cfg), store, loaded)
    })
}

/// Runs one input. Byte 0 picks the protocol (`% 3`: 3.1, 3.1.1, 5.0) and, in bit 2, whether
/// the session is attached (as after a CONNECT); the rest is the client's byte stream.
pub fn run_connection(data: &[u8]) {
    let Some((&sel, mut stream)) = data.split_first() else {
        return;
    };
    let proto = match sel % 3 {
        0 => Protocol::V310,
        1 => Protocol::V311,
        _ => Protocol::V500,
    };
    let attached = sel & 0x04 != 0;
    let broker = broker().clone();
    let max_packet = broker.cfg.limits.max_packet_size as usize;
    let conn = Conn::detached(broker, proto, "fuzz", attached);
    let replies = Replies::new(Default::default());
    let mut st = publish::PublishState::default();
    smol::block_on(async {
        while let Ok(Some(len)) = edge_mqtt::frame::complete_frame_len(stream, max_packet) {
            let (frame, rest) = stream.split_at(len);
            stream = rest;
            let Ok(packet) = codec::decode(frame, conn.proto) else {
                break;
            };
            let handled = handle_packet(&conn, packet, &mut st, &replies).await;
            while let Some(c) = replies.pop() {
                if let Control::Answer(a) = c {
                    if a.incoming_done {
                        conn.incoming_done();
                    }
                    let _ = codec::encode(&a.reply.into_packet(), conn.proto);
                }
            }
            if handled.is_err() {
                break;
            }
        }
    });
    if attached {
        smol::block_on(
            conn.broker
                .disconnect(&conn.client_id, conn.conn_id, Departure::Abnormal),
        );
    }
}
