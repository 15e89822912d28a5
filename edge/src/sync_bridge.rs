//! Wires the store-and-forward module (`edge_sync`) into the broker: capture in the broker's
//! commit (`CommitHook`), admission on the publish path (`Forwarder`), and the downlink's way
//! into local routing (`LocalBus`). Messages that came down are flagged and never captured.
//! Errors cross the seam typed: a failed capture is the outbox's `SyncError`, carried by the
//! broker's `Error::Sync` with its redb source. (`LocalBus` answers `String` until the trait,
//! which lives with the downlink, takes a typed error.)

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use edge_sync::{BusError, DownMessage, LocalBus, LocalMessage, Outbox, SyncConfig, SyncError};
use redb::WriteTransaction;

use crate::broker::{Broker, Forwarder, Published};
use crate::error::Result;
use crate::message::{now_ms, Message, MessageProps};
use crate::storage::CommitHook;

struct Bridge {
    outbox: Arc<Outbox>,
}

impl Forwarder for Bridge {
    fn wants(&self, topic: &str, qos: u8) -> bool {
        self.outbox.wants(topic, qos)
    }

    fn admit(&self, topic: &str, payload_len: usize) -> bool {
        self.outbox.admit(topic, payload_len).is_ok()
    }
}

impl CommitHook for Bridge {
    fn capture(&self, txn: &WriteTransaction, msg: &Message) -> std::result::Result<(), SyncError> {
        let props = msg.props.as_deref();
        let user: Vec<(String, String)> = props
            .map(|p| {
                p.user_properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let local = LocalMessage {
            topic: &msg.topic,
            payload: &msg.payload,
            qos: msg.qos,
            retain: msg.retain,
            user_properties: &user,
            content_type: props.and_then(|p| p.content_type.as_deref()),
            received_at_ms: msg.received_ms,
        };
        self.outbox.capture(txn, &local)
    }

    fn committed(&self, ok: bool) {
        self.outbox.committed(ok);
    }
}

/// The downlink's entry into local routing.
struct Bus {
    broker: Weak<Broker>,
}

impl LocalBus for Bus {
    fn publish(
        &self,
        m: DownMessage,
    ) -> futures_lite::future::Boxed<std::result::Result<(), BusError>> {
        let broker = self.broker.clone();
        Box::pin(async move {
            let broker = broker.upgrade().ok_or(BusError::Stopped)?;
            let props = (!m.user_properties.is_empty()).then(|| {
                Box::new(MessageProps {
                    user_properties: m
                        .user_properties
                        .iter()
                        .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
                        .collect(),
                    ..Default::default()
                })
            });
            let msg = Arc::new(Message {
                topic: Arc::from(m.topic.as_str()),
                payload: m.payload,
                qos: m.qos.min(2),
                retain: m.retain,
                received_ms: now_ms(),
                expiry_secs: None,
                publisher: Arc::from(""),
                from_downlink: true,
                props,
            });
            match broker.publish(msg, None).await {
                Published::Accepted { ticket, .. } | Published::Duplicate { ticket } => {
                    match ticket {
                        Some(t) => broker
                            .store
                            .wait(t)
                            .await
                            .map_err(|e| BusError::Storage(Box::new(e))),
                        None => Ok(()),
                    }
                }
                Published::QuotaExceeded => Err(BusError::QuotaExceeded),
                Published::SessionGone => Err(BusError::NotAccepted),
            }
        })
    }
}

/// Opens the outbox in the broker's database. Its tables are not read by the store's start-up,
/// so damage there shows here: redb's `Corrupted` or a panic (caught: it used to exit the
/// broker with code 101 at every start) leaves the marker that makes the next start check
/// every page (`storage.on_damaged` then applies), and the start fails with a clear error
/// (systemd restarts it).
fn open_outbox(broker: &Arc<Broker>, cfg: &SyncConfig) -> Result<Arc<Outbox>> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Outbox::open(broker.store.database(), cfg)
    }));
    let reason = match opened {
        Ok(Ok(outbox)) => return Ok(outbox),
        Ok(Err(e @ SyncError::Storage(redb::Error::Corrupted(_)))) => e.to_string(),
        Ok(Err(e)) => return Err(e.into()),
        Err(payload) => format!(
            "opening the sync outbox panicked: {}",
            edge_mqtt::util::panic_message(payload.as_ref())
        ),
    };
    (broker.store.damage_hook())("opening the sync outbox");
    Err(crate::error::Error::DamagedDatabase {
        path: broker.cfg.db_path().display().to_string(),
        reason,
    })
}

/// Opens the outbox in the broker's database, plugs it in and starts the sync tasks. Returns
/// the future that stops them.
pub fn start(
    broker: &Arc<Broker>,
    cfg: SyncConfig,
    data_dir: PathBuf,
) -> Result<futures_lite::future::Boxed<()>> {
    let outbox = open_outbox(broker, &cfg)?;
    outbox.on_damage(Box::new(broker.store.damage_hook()));
    let bridge = Arc::new(Bridge {
        outbox: outbox.clone(),
    });
    broker.store.set_hook(bridge.clone());
    broker.set_forwarder(bridge);
    let bus = Arc::new(Bus {
        broker: Arc::downgrade(broker),
    });
    let handle = edge_sync::start(outbox, cfg, data_dir, bus);
    broker.set_sync_status(handle.status_reader());
    // Sync's tasks run on smol's global executor thread: its heap is collected there too
    // (`heap_trim.rs`), for as long as sync runs.
    let collect = smol::spawn(crate::heap_trim::collect_each_second());
    Ok(Box::pin(async move {
        handle.shutdown().await;
        collect.cancel().await;
    }))
}
