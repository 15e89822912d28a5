//! PUBACK, PUBREC and PUBCOMP from the client: acknowledgements of our deliveries. Each frees
//! (or advances) one in-flight message of the session (the PUBACKs of one read in one batch);
//! only a successful PUBREC is answered, with PUBREL, and a failed one (reason code 0x80 or
//! above) ends that QoS 2 exchange.

use mqtt_proto::{v5, Pid};

use crate::connection::replies::{Answer, Reply};
use crate::connection::{Close, Conn};

/// PUBACKs read one after another: never answered, applied in one batch.
pub(super) async fn handle_pubacks(conn: &Conn, pids: &[Pid]) {
    if !pids.is_empty() {
        conn.broker.complete_all(&conn.client_id, pids).await;
    }
}

pub(super) async fn handle_pubrec(conn: &Conn, a: v5::Pubrec) -> Result<Option<Answer>, Close> {
    let failed = a.reason_code as u8 >= 0x80;
    let known = conn.broker.received(&conn.client_id, a.pid, failed).await;
    if failed {
        return Ok(None);
    }
    let code = if known {
        v5::PubrelReasonCode::Success
    } else {
        v5::PubrelReasonCode::PacketIdentifierNotFound
    };
    Ok(Some(Answer::now(Reply::Pubrel(a.pid, code))))
}

pub(super) async fn handle_pubcomp(conn: &Conn, a: v5::Pubcomp) -> Result<Option<Answer>, Close> {
    conn.broker.complete(&conn.client_id, a.pid).await;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::{Pid, Protocol};

    #[test]
    fn pubrec_for_an_unknown_packet_id_is_released_with_not_found() {
        let t = test_support::conn(Protocol::V500, true);
        let pid = Pid::try_from(2).unwrap();
        let got = smol::block_on(handle_pubrec(&t.conn, v5::Pubrec::new_success(pid)));
        assert_eq!(
            got,
            Ok(Some(Answer::now(Reply::Pubrel(
                pid,
                v5::PubrelReasonCode::PacketIdentifierNotFound
            ))))
        );
    }

    #[test]
    fn a_failed_pubrec_is_not_answered() {
        let t = test_support::conn(Protocol::V500, true);
        let pid = Pid::try_from(2).unwrap();
        let rec = v5::Pubrec::new(pid, v5::PubrecReasonCode::QuotaExceeded);
        assert_eq!(smol::block_on(handle_pubrec(&t.conn, rec)), Ok(None));
    }
}
