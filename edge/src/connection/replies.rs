//! The queue from the reader to the writer: replies leave in the order they were queued, and a
//! reply is never dropped (the reader waits for room instead). The queue is bounded, wakes the
//! writer through the connection's wake-up (shared with the session), and allocates only while
//! it holds replies (the writer releases it when it goes idle).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;

use crate::session::Wakeup;
use mqtt_proto::v5::{self, Packet};
use mqtt_proto::Pid;

use super::Close;
use crate::storage::Ticket;

/// A packet for the client. Kept small: the hot path (acks) is inline, rarer packets are boxed.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Puback(Pid, v5::PubackReasonCode),
    Pubrec(Pid, v5::PubrecReasonCode),
    Pubrel(Pid, v5::PubrelReasonCode),
    Pubcomp(Pid, v5::PubcompReasonCode),
    Pingresp,
    Other(Box<Packet>),
}

impl Reply {
    pub(super) fn into_packet(self) -> Packet {
        match self {
            Reply::Puback(p, c) => Packet::Puback(v5::Puback::new(p, c)),
            Reply::Pubrec(p, c) => Packet::Pubrec(v5::Pubrec::new(p, c)),
            Reply::Pubrel(p, c) => Packet::Pubrel(v5::Pubrel::new(p, c)),
            Reply::Pubcomp(p, c) => Packet::Pubcomp(v5::Pubcomp::new(p, c)),
            Reply::Pingresp => Packet::Pingresp,
            Reply::Other(p) => *p,
        }
    }

    /// The packet's four bytes when it is a successful acknowledgement: the same in MQTT 3 and
    /// 5 (MQTT 5.0 3.4.2.1: a Success reason code with no properties is left out), written
    /// straight into the connection's buffer (the codec's path allocated twice per PUBACK).
    pub(super) fn short_form(&self) -> Option<[u8; 4]> {
        let (first, pid) = match *self {
            Reply::Puback(p, v5::PubackReasonCode::Success) => (0x40, p),
            Reply::Pubrec(p, v5::PubrecReasonCode::Success) => (0x50, p),
            Reply::Pubrel(p, v5::PubrelReasonCode::Success) => (0x62, p),
            Reply::Pubcomp(p, v5::PubcompReasonCode::Success) => (0x70, p),
            _ => return None,
        };
        let [hi, lo] = pid.value().to_be_bytes();
        Some([first, 0x02, hi, lo])
    }
}

/// A reply and when it may go: with a `ticket`, once that storage ticket is committed;
/// `incoming_done` ends one incoming QoS 1/2 exchange (our Receive Maximum) once it is sent.
#[derive(Debug, PartialEq)]
pub(super) struct Answer {
    pub(super) ticket: Option<Ticket>,
    pub(super) reply: Reply,
    pub(super) incoming_done: bool,
}

impl Answer {
    /// A reply that promises nothing about storage.
    pub(super) fn now(reply: Reply) -> Answer {
        Answer {
            ticket: None,
            reply,
            incoming_done: false,
        }
    }
}

/// What the writer takes from the queue.
pub(super) enum Control {
    Answer(Answer),
    /// The reader ended: the writer sends what is queued before this, then closes.
    Close(Close),
}

/// Boxed on purpose (see [`Replies::queue`]).
type Queue = Option<Box<VecDeque<Control>>>;

pub(super) struct Replies {
    /// Boxed, and `None` while empty and released: 8 bytes in every idle connection where a
    /// `VecDeque` takes 32 (the task's block of an idle connection then fits mimalloc's 320-byte
    /// size class instead of 384, `connection::tests`).
    queue: Mutex<Queue>,
    room: Event,
    wakeup: Arc<Wakeup>,
}

impl Replies {
    /// A queue that wakes the writer through `wakeup`. Its bound is passed with each reply
    /// ([`Replies::send`]): 8 bytes less in every connection than keeping it here.
    pub(super) fn new(wakeup: Arc<Wakeup>) -> Replies {
        Replies {
            queue: Mutex::new(None),
            room: Event::new(),
            wakeup,
        }
    }

    /// The connection's wake-up, which this queue wakes (shared with the session).
    pub(super) fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// The same, shared (for the keep-alive sweep).
    pub(super) fn wakeup_arc(&self) -> &Arc<Wakeup> {
        &self.wakeup
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `answer`, waiting while `cap` replies are queued (the connection's
    /// [`Conn::reply_cap`](super::Conn::reply_cap)).
    pub(super) async fn send(&self, answer: Answer, cap: usize) {
        let mut item = Some(Control::Answer(answer));
        // The room event is listened to only when the queue is full (an event allocates its
        // state the first time it is used, so an idle connection's never is).
        let mut room = None;
        loop {
            {
                let mut q = self.lock();
                let q = q.get_or_insert_with(Box::default);
                if q.len() < cap {
                    q.extend(item.take());
                    break;
                }
            }
            match room.take() {
                Some(listener) => listener.await,
                // Listening before looking again: a reply taken in between is seen then.
                None => room = Some(self.room.listen()),
            }
        }
        self.wakeup.wake();
    }

    /// Queues the end of the connection (never waits: the reader is done).
    pub(super) fn close(&self, close: Close) {
        self.lock()
            .get_or_insert_with(Box::default)
            .push_back(Control::Close(close));
        self.wakeup.wake();
    }

    /// Gives the queue's memory back when it is empty (the writer is going idle).
    pub(super) fn release(&self) {
        let mut q = self.lock();
        if q.as_ref().is_some_and(|q| q.is_empty()) {
            *q = None;
        }
    }

    /// Replies queued now.
    pub(super) fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, |q| q.len())
    }

    pub(super) fn pop(&self) -> Option<Control> {
        let mut q = self.lock();
        let queue = q.as_mut()?;
        let c = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 16 {
            queue.shrink_to_fit();
        }
        // Checked under the queue lock: a sender registers before its last look at the queue.
        if c.is_some() && self.room.total_listeners() > 0 {
            self.room.notify(1);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;

    #[test]
    fn a_successful_acknowledgement_short_form_is_what_the_codec_encodes() {
        use mqtt_proto::Protocol;
        let replies = |n: u16| {
            let p = Pid::try_from(n).expect("non-zero pid");
            [
                Reply::Puback(p, v5::PubackReasonCode::Success),
                Reply::Pubrec(p, v5::PubrecReasonCode::Success),
                Reply::Pubrel(p, v5::PubrelReasonCode::Success),
                Reply::Pubcomp(p, v5::PubcompReasonCode::Success),
            ]
        };
        for proto in [Protocol::V310, Protocol::V311, Protocol::V500] {
            for n in [1, 258, 65535] {
                for (r, again) in replies(n).into_iter().zip(replies(n)) {
                    let short = r.short_form().expect("a short form");
                    let coded = crate::codec::encode(&again.into_packet(), proto);
                    assert_eq!(Some(short.to_vec()), coded, "{proto:?} pid {n}");
                }
            }
        }
        // Anything else takes the codec's path.
        let p = Pid::try_from(1).expect("non-zero pid");
        assert!(Reply::Puback(p, v5::PubackReasonCode::NotAuthorized)
            .short_form()
            .is_none());
        assert!(Reply::Pingresp.short_form().is_none());
    }

    #[test]
    fn replies_leave_in_order_and_the_close_after_them() {
        let replies = Replies::new(Arc::default());
        smol::block_on(async {
            replies.send(Answer::now(Reply::Pingresp), 4).await;
            replies
                .send(
                    Answer {
                        ticket: Some(Ticket::for_test(7)),
                        reply: Reply::Other(Box::new(Packet::Pingresp)),
                        incoming_done: true,
                    },
                    4,
                )
                .await;
        });
        replies.close(Close::Silent);
        assert!(
            matches!(replies.pop(), Some(Control::Answer(a)) if a == Answer::now(Reply::Pingresp))
        );
        assert!(
            matches!(replies.pop(), Some(Control::Answer(a)) if a.ticket == Some(Ticket::for_test(7)) && a.incoming_done)
        );
        assert!(matches!(replies.pop(), Some(Control::Close(Close::Silent))));
        assert!(replies.pop().is_none());
    }

    #[test]
    fn a_full_queue_makes_the_sender_wait_until_a_reply_is_taken() {
        let replies = Replies::new(Arc::default());
        smol::block_on(async {
            replies.send(Answer::now(Reply::Pingresp), 1).await;
            let blocked = async {
                replies.send(Answer::now(Reply::Pingresp), 1).await;
                true
            }
            .or(async {
                smol::Timer::after(std::time::Duration::from_millis(50)).await;
                false
            })
            .await;
            assert!(!blocked, "second reply must wait for room");
            assert!(replies.pop().is_some());
            replies.send(Answer::now(Reply::Pingresp), 1).await;
        });
        assert!(replies.pop().is_some());
        assert!(replies.pop().is_none());
    }
}
