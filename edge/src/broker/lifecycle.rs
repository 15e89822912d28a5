//! Sessions coming and going: CONNECT (new, resumed or taken over), the end of a connection,
//! expiry, wills, and shutdown. Each change is one [`Broker::commit`]; a session ends only
//! through `State::remove_session`, and a will is published through routing like a message.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Broker, State};
use crate::message::now_ms;
use crate::session::{ConnLink, Kick, Session, Wakeup};
use crate::storage::{Op, Ticket, WillRecord};

/// What CONNECT asks of the session layer (already validated by the connection).
pub struct ConnectRequest {
    pub client_id: Arc<str>,
    pub protocol: u8,
    pub clean_start: bool,
    pub expiry_secs: u32,
    pub will: Option<WillRecord>,
    pub inflight_limit: usize,
    /// What the client may read (checked when routing to its session).
    pub acl: crate::auth::ClientAcl,
    /// The authenticated user name (None: anonymous).
    pub username: Option<Arc<str>>,
}

pub struct Connected {
    pub session_present: bool,
    pub conn_id: u64,
    /// Shared with the session: woken by deliveries and replies, set by kicks.
    pub wakeup: Arc<Wakeup>,
    /// Wait for it before CONNACK: the session record is stored.
    pub ticket: Option<Ticket>,
}

/// How a connection ended, from the session's point of view.
pub enum Departure {
    /// DISCONNECT received. `send_will` for v5 reason 0x04; `expiry` if the client changed it.
    Graceful {
        send_will: bool,
        expiry: Option<u32>,
    },
    /// Network error, keep-alive timeout, protocol error, take-over, shutdown.
    Abnormal,
}

impl Broker {
    /// Attaches a new connection to its session (creating, resuming or taking it over).
    pub async fn connect(&self, req: ConnectRequest) -> Connected {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let wakeup = Arc::new(Wakeup::default());
        let link = ConnLink {
            id: conn_id,
            wakeup: wakeup.clone(),
        };
        let now = now_ms();
        let (session_present, ticket) = self
            .commit(|st, ops| {
                let id = req.client_id.clone();
                let mut session_present = false;
                let mut will_now = None;
                if let Some(old) = st.sessions.get_mut(&id) {
                    let claim = old.claim(req.clean_start, now);
                    will_now = claim.will_now;
                    if claim.resumable {
                        session_present = true;
                    } else {
                        st.remove_session(&id, ops);
                    }
                }
                let s = st.sessions.get_or_insert_with(&id.clone(), || {
                    Box::new(Session::new(id, req.protocol, req.expiry_secs))
                });
                s.attach(req, link, ops);
                if let Some(w) = will_now {
                    self.publish_will(st, w, ops);
                }
                session_present
            })
            .await;
        Connected {
            session_present,
            conn_id,
            wakeup,
            ticket,
        }
    }

    /// Detaches a connection. Does nothing when the session has since been taken over.
    pub async fn disconnect(&self, client_id: &Arc<str>, conn_id: u64, how: Departure) {
        let now = now_ms();
        let max_expiry = self.cfg.limits.max_session_expiry_secs;
        self.commit(|st, ops| {
            let Some(s) = st.sessions.get_mut(client_id) else {
                return;
            };
            if !s.is_attached_to(conn_id) {
                return;
            }
            let will_now = s.detach(now, how, max_expiry, ops);
            if s.persistent() {
                s.save(ops);
            } else {
                st.remove_session(client_id, ops);
            }
            if let Some(w) = will_now {
                self.publish_will(st, w, ops);
            }
        })
        .await;
    }

    /// Current session expiry interval of a session (0 when unknown).
    pub fn session_expiry(&self, client: &Arc<str>) -> u32 {
        self.lock()
            .sessions
            .get(client)
            .map(|s| s.expiry_secs())
            .unwrap_or(0)
    }

    /// Periodic work: due wills, expired sessions, expired retained messages.
    pub async fn tick(&self) {
        self.memory.notify_if_relieved();
        let now = now_ms();
        self.commit(|st, ops| {
            let mut wills = Vec::new();
            let mut gone = Vec::new();
            for s in st.sessions.values_mut() {
                if s.online() {
                    continue;
                }
                wills.extend(s.take_due_will(now, ops));
                if s.expired(now) {
                    gone.push(s.client_id().clone());
                }
            }
            for id in gone {
                if let Some(s) = st.remove_session(&id, ops) {
                    tracing::debug!(client_id = %id, "session expired");
                    wills.extend(s.into_will());
                }
            }
            let expired: Vec<Arc<str>> = st
                .retained
                .iter()
                .filter(|(_, m)| m.is_expired(now))
                .map(|(t, _)| t.clone())
                .collect();
            for t in expired {
                st.retained.remove(&t);
                ops.push(Op::Retain {
                    topic: t,
                    msg: None,
                });
            }
            for w in wills {
                self.publish_will(st, w, ops);
            }
        })
        .await;
    }

    /// Publishes a will as a message from now (its expiry counts from publication).
    fn publish_will(&self, st: &mut State, w: WillRecord, ops: &mut Vec<Op>) {
        let mut msg = w.msg;
        msg.received_ms = now_ms();
        let msg = Arc::new(msg);
        tracing::debug!(topic = %msg.topic, "publishing will");
        if msg.retain {
            self.retain(st, &msg, ops);
        }
        self.route(st, msg, ops);
    }

    /// Asks every connection to close (server shutting down).
    pub fn kick_all(&self) {
        let st = self.lock();
        for s in st.sessions.values() {
            s.kick(Kick::Shutdown);
        }
        drop(st);
        self.shutdown.notify(usize::MAX);
    }
}
