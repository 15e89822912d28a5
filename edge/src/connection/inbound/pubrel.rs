//! PUBREL from the client: the second half of an incoming QoS 2 exchange. The message was
//! routed at PUBLISH; PUBREL forgets its packet id, and PUBCOMP waits until that is stored, so
//! that after a restart a new message reusing the id is not taken for a duplicate.

use mqtt_proto::v5;

use crate::connection::replies::{Answer, Reply};
use crate::connection::{Close, Conn};

pub(super) async fn handle_pubrel(conn: &Conn, r: v5::Pubrel) -> Result<Option<Answer>, Close> {
    let (known, ticket) = conn.broker.release(&conn.client_id, r.pid).await;
    let code = if known {
        v5::PubcompReasonCode::Success
    } else {
        v5::PubcompReasonCode::PacketIdentifierNotFound
    };
    Ok(Some(Answer {
        ticket,
        reply: Reply::Pubcomp(r.pid, code),
        // An unknown packet id opened no exchange.
        incoming_done: known,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::{Pid, Protocol};

    #[test]
    fn pubrel_for_an_unknown_packet_id_is_completed_with_not_found() {
        let t = test_support::conn(Protocol::V500, true);
        let pid = Pid::try_from(4).unwrap();
        let got = smol::block_on(handle_pubrel(&t.conn, v5::Pubrel::new_success(pid)));
        let answer = got.unwrap().expect("a PUBCOMP");
        assert_eq!(
            answer.reply,
            Reply::Pubcomp(pid, v5::PubcompReasonCode::PacketIdentifierNotFound)
        );
        assert!(!answer.incoming_done);
    }
}
