//! The sync client's inbound path: `FrameReader` splitting an upstream byte stream into frames
//! and `client::decode` on each (MQTT 5 or 3.1.1). For MQTT 5, every frame the strict codec
//! refuses goes through the lenient acknowledgement decoder (`lenient::decode_v5`, private to
//! the sync crate), so this target covers it too.
//!
//! Input: byte 0 picks the protocol (bit 0: 5.0 / 3.1.1), the rest is the upstream stream.
#![no_main]

use edge_sync::client::{self, FrameReader, Proto};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let proto = if sel & 1 == 0 { Proto::V5 } else { Proto::V311 };
    let mut reader = FrameReader::new(futures_lite::io::Cursor::new(stream.to_vec()));
    futures_lite::future::block_on(async {
        while let Ok(frame) = reader.next().await {
            let _ = client::decode(proto, &frame);
        }
    });
});
