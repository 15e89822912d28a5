//! UNSUBSCRIBE from the client: removes the filters from the session and answers UNSUBACK, with
//! one reason code per filter (v5), once the change is stored.

use std::sync::Arc;

use mqtt_proto::v5::{self, Packet, UnsubscribeReasonCode as U};

use crate::connection::replies::{Answer, Reply};
use crate::connection::{Close, Conn};

pub(super) async fn handle_unsubscribe(
    conn: &Conn,
    u: v5::Unsubscribe,
) -> Result<Option<Answer>, Close> {
    let filters: Vec<Arc<str>> = u.topics.iter().map(|f| Arc::from(&**f)).collect();
    let (existed, ticket) = conn.broker.unsubscribe(&conn.client_id, &filters).await;
    let codes = existed
        .into_iter()
        .map(|e| {
            if e {
                U::Success
            } else {
                U::NoSubscriptionExisted
            }
        })
        .collect();
    let ack = Packet::Unsuback(v5::Unsuback::new(u.pid, codes));
    Ok(Some(Answer {
        ticket,
        reply: Reply::Other(Box::new(ack)),
        incoming_done: false,
    }))
}
