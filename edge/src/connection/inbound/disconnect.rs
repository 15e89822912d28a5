//! DISCONNECT from the client: always ends the connection. A graceful ending discards the will
//! unless the reason asks for it (v5 0x04); the session expiry may change here, but not from 0
//! to a non-zero value [MQTT-3.14.2-2].

use mqtt_proto::v5::{self, DisconnectReasonCode as Dr};

use crate::connection::{Close, Conn};

pub(super) fn handle_disconnect(conn: &Conn, d: &v5::Disconnect) -> Close {
    let expiry = d.properties.session_expiry_interval;
    if let Some(e) = expiry {
        if e != 0 && conn.broker.session_expiry(&conn.client_id) == 0 {
            return Close::Broker {
                code: Dr::ProtocolError,
                why: "session expiry changed from zero",
            };
        }
    }
    let send_will = d.reason_code == Dr::DisconnectWithWillMessage;
    tracing::debug!(peer = %conn.peer, client_id = %conn.client_id, reason = ?d.reason_code, "client sent DISCONNECT");
    Close::Client { send_will, expiry }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::Protocol;

    #[test]
    fn raising_session_expiry_from_zero_closes_with_protocol_error() {
        let t = test_support::conn(Protocol::V500, true);
        let mut d = v5::Disconnect::new_normal();
        d.properties.session_expiry_interval = Some(60);
        assert!(matches!(
            handle_disconnect(&t.conn, &d),
            Close::Broker {
                code: Dr::ProtocolError,
                ..
            }
        ));
    }

    #[test]
    fn disconnect_with_will_message_ends_gracefully_and_sends_the_will() {
        let t = test_support::conn(Protocol::V500, true);
        let d = v5::Disconnect::new(Dr::DisconnectWithWillMessage);
        assert_eq!(
            handle_disconnect(&t.conn, &d),
            Close::Client {
                send_will: true,
                expiry: None
            }
        );
    }
}
