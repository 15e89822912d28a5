//! One connection's packet handlers fed an arbitrary client byte stream, in process (see
//! `robustmq_edge::connection::fuzzing`): frames are split and decoded as the read loop does
//! and dispatched to the same `handle_packet`, against a broker on a temporary store.
//!
//! Input: byte 0 picks the protocol (`% 3`) and, in bit 2, an attached session; the rest is
//! the byte stream after CONNECT.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    robustmq_edge::connection::fuzzing::run_connection(data);
});
