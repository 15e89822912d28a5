//! The broker's packet decoder for MQTT 3.1 / 3.1.1 / 5.0: frame sizing, the CONNECT checks,
//! decoding (with the MQTT 3 lifting to v5), and re-encoding round trips where they apply.
//!
//! Input: byte 0 picks the protocol (`% 3`: 3.1, 3.1.1, 5.0), the rest is one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_proto::v5::Packet;
use mqtt_proto::{v3, Protocol};
use robustmq_edge::codec;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let proto = match sel % 3 {
        0 => Protocol::V310,
        1 => Protocol::V311,
        _ => Protocol::V500,
    };

    // Frame sizing: the broker's wrapper and the shared one agree.
    let header = codec::fixed_header(frame);
    let shared = edge_mqtt::frame::fixed_header(frame, usize::MAX);
    match (&header, &shared) {
        (Ok(Some((hl, rl))), Ok(Some(h))) => assert_eq!((*hl, *rl), (h.header_len, h.remaining)),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("fixed header readers disagree: {header:?} vs {shared:?}"),
    }
    if let Some((_, n)) = edge_mqtt::frame::read_var_int(frame) {
        let mut out = Vec::new();
        edge_mqtt::frame::write_var_int(n as usize, &mut out);
        assert_eq!(edge_mqtt::frame::read_var_int(&out), Some((out.len(), n)));
    }

    // The CONNECT checks, on a complete CONNECT frame as the handshake calls them.
    if let Ok(Some((hl, rl))) = header {
        if frame.len() >= hl + rl && frame[0] == 0x10 {
            let whole = &frame[..hl + rl];
            if let Ok(p) = codec::connect_protocol(whole, hl) {
                let _ = codec::check_connect_flags(whole, hl, p);
            }
        }
    }

    // Decode, then re-encode what has a form for this protocol and decode that again.
    let Ok(packet) = codec::decode(frame, proto) else {
        return;
    };
    if proto == Protocol::V500 {
        let bytes = codec::encode(&packet, proto).expect("a decoded v5 packet encodes");
        let again = codec::decode(&bytes, proto).expect("a re-encoded v5 packet decodes");
        assert_eq!(again, packet);
    } else {
        if let Some(bytes) = codec::encode(&packet, proto) {
            // Only PUBLISH and the acknowledgements go both ways in MQTT 3.
            if matches!(
                packet,
                Packet::Publish(_)
                    | Packet::Puback(_)
                    | Packet::Pubrec(_)
                    | Packet::Pubrel(_)
                    | Packet::Pubcomp(_)
            ) {
                let again = codec::decode(&bytes, proto).expect("a re-encoded v3 packet decodes");
                assert_eq!(again, packet);
            }
        }
        // The codec's own v3 round trip.
        if let Ok(Some(p3)) = v3::Packet::decode(frame) {
            let bytes = p3.encode().expect("a decoded v3 packet encodes");
            let again = v3::Packet::decode(bytes.as_ref())
                .expect("a re-encoded v3 packet decodes")
                .expect("complete");
            assert_eq!(again, p3);
        }
    }
});
