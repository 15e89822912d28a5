//! What the client sends: CONNECT of the persistent upstream session, PUBLISH, the QoS 1/2
//! acknowledgements, SUBSCRIBE for the downlink, PINGREQ and DISCONNECT. Each is built as a v5
//! packet and encoded for the negotiated version by `edge_mqtt::version` (3.1.1 drops the
//! properties). Invariant: the session is never clean, so a reconnect keeps in-flight state.

use std::sync::Arc;

use bytes::Bytes;
use edge_mqtt::version::{self, CodecError};
use mqtt_proto::{v5, Pid, QoS, QosPid, TopicFilter, TopicName};

use super::{Proto, MAX_INBOUND_PACKET};
use crate::config::SyncConfig;
use crate::error::SyncError;

fn enc_err<E: std::fmt::Display>(e: E) -> SyncError {
    SyncError::Protocol(format!("encode: {e}"))
}

fn encode(proto: Proto, p: &v5::Packet) -> Result<Vec<u8>, SyncError> {
    version::encode(p, proto.protocol())
        .map(|b| b.as_ref().to_vec())
        .map_err(|e: CodecError| enc_err(e))
}

fn pid(p: u16) -> Result<Pid, SyncError> {
    Pid::try_from(p).map_err(enc_err)
}

fn qos_pid(qos: u8, p: u16) -> Result<QosPid, SyncError> {
    Ok(match qos {
        0 => QosPid::Level0,
        1 => QosPid::Level1(pid(p)?),
        _ => QosPid::Level2(pid(p)?),
    })
}

fn uprops(props: &[(String, String)]) -> Vec<v5::UserProperty> {
    props
        .iter()
        .map(|(k, v)| v5::UserProperty {
            name: k.as_str().into(),
            value: v.as_str().into(),
        })
        .collect()
}

/// The CONNECT packet of the persistent upstream session.
pub fn encode_connect(
    proto: Proto,
    cfg: &SyncConfig,
    keep_alive: u16,
) -> Result<Vec<u8>, SyncError> {
    let cid: Arc<str> = cfg.client_id().as_str().into();
    let username: Option<Arc<str>> = cfg.username.as_deref().map(Into::into);
    let mut c = v5::Connect::new(cid, keep_alive);
    c.clean_start = false;
    c.password = cfg.password.as_ref().map(|p| Bytes::from(p.clone()));
    c.properties.session_expiry_interval = Some(cfg.session_expiry_secs);
    c.properties.receive_max = Some(64);
    c.properties.max_packet_size = Some(MAX_INBOUND_PACKET as u32);
    c.username = match proto {
        Proto::V5 => {
            if let Some(t) = &cfg.tenant {
                c.properties.user_properties = uprops(&[("tenant".to_string(), t.clone())]);
            }
            username
        }
        // No properties in 3.1.1: RobustMQ takes the tenant from a `tenant@user` user name.
        Proto::V311 => match (&cfg.tenant, username) {
            (Some(t), Some(u)) => Some(format!("{t}@{u}").into()),
            (Some(_), None) => None, // refused by the config check for protocol "3.1.1"
            (None, u) => u,
        },
    };
    encode(proto, &v5::Packet::Connect(c))
}

/// An outgoing PUBLISH.
pub struct OutPublish<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub pid: u16,
    pub dup: bool,
    pub retain: bool,
    pub user_properties: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    pub message_expiry_secs: Option<u32>,
}

pub fn encode_publish(proto: Proto, p: &OutPublish<'_>) -> Result<Vec<u8>, SyncError> {
    let topic = TopicName::try_from(p.topic).map_err(enc_err)?;
    let payload = Bytes::copy_from_slice(p.payload);
    let mut m = v5::Publish::new(qos_pid(p.qos, p.pid)?, topic, payload);
    m.dup = p.dup;
    m.retain = p.retain;
    m.properties.user_properties = uprops(p.user_properties);
    m.properties.content_type = p.content_type.map(Into::into);
    m.properties.message_expiry_interval = p.message_expiry_secs;
    encode(proto, &v5::Packet::Publish(m))
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP with success reason.
#[derive(Debug, Clone, Copy)]
pub enum Ack {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

pub fn encode_ack(proto: Proto, kind: Ack, p: u16) -> Result<Vec<u8>, SyncError> {
    let id = pid(p)?;
    let packet = match kind {
        Ack::PubAck => v5::Packet::Puback(v5::Puback::new_success(id)),
        Ack::PubRec => v5::Packet::Pubrec(v5::Pubrec::new_success(id)),
        Ack::PubRel => v5::Packet::Pubrel(v5::Pubrel::new_success(id)),
        Ack::PubComp => v5::Packet::Pubcomp(v5::Pubcomp::new_success(id)),
    };
    encode(proto, &packet)
}

/// SUBSCRIBE to the downlink filters (v5: retain-as-published so local retain flags are right).
pub fn encode_subscribe(
    proto: Proto,
    p: u16,
    filters: &[(String, u8)],
) -> Result<Vec<u8>, SyncError> {
    let id = pid(p)?;
    let mut topics = Vec::with_capacity(filters.len());
    for (f, q) in filters {
        let tf = TopicFilter::try_from(f.as_str()).map_err(enc_err)?;
        let mut o = v5::SubscriptionOptions::new(QoS::from_u8(*q).map_err(enc_err)?);
        o.retain_as_published = true;
        o.no_local = true;
        // Subscribed again at every connect: retained messages only the first time.
        o.retain_handling = v5::RetainHandling::SendAtSubscribeIfNotExist;
        topics.push((tf, o));
    }
    encode(
        proto,
        &v5::Packet::Subscribe(v5::Subscribe::new(id, topics)),
    )
}

pub fn encode_pingreq(proto: Proto) -> Result<Vec<u8>, SyncError> {
    encode(proto, &v5::Packet::Pingreq)
}

/// Normal DISCONNECT (v5 reason 0 omitted): the upstream keeps the session.
pub fn encode_disconnect(proto: Proto) -> Result<Vec<u8>, SyncError> {
    encode(proto, &v5::Packet::Disconnect(v5::Disconnect::new_normal()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::v3;

    #[test]
    fn mqtt311_connect_carries_the_tenant_in_the_user_name() {
        let toml = "node_id = \"n\"\nupstreams = [\"tcp://a:1\"]\nprotocol = \"3.1.1\"\ntenant = \"t1\"\nusername = \"bob\"\n";
        let cfg = SyncConfig::from_toml_str(toml).unwrap();
        let b = encode_connect(Proto::V311, &cfg, 30).unwrap();
        match v3::Packet::decode(&b).unwrap().unwrap() {
            v3::Packet::Connect(c) => {
                assert_eq!(c.username.as_deref(), Some("t1@bob"));
                assert_eq!(c.protocol, mqtt_proto::Protocol::V311);
                assert!(!c.clean_session);
            }
            other => panic!("{other:?}"),
        }
        let toml = "node_id = \"n\"\nupstreams = [\"tcp://a:1\"]\ntenant = \"t1\"\n";
        let cfg = SyncConfig::from_toml_str(toml).unwrap();
        let b = encode_connect(Proto::V5, &cfg, 30).unwrap();
        match v5::Packet::decode(&b).unwrap().unwrap() {
            v5::Packet::Connect(c) => {
                let u = &c.properties.user_properties[0];
                assert_eq!((&*u.name, &*u.value), ("tenant", "t1"));
                assert!(!c.clean_start);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_packets_have_their_two_byte_forms() {
        for proto in [Proto::V5, Proto::V311] {
            assert_eq!(encode_pingreq(proto).unwrap(), vec![0xC0, 0x00]);
            assert_eq!(encode_disconnect(proto).unwrap(), vec![0xE0, 0x00]);
            assert_eq!(
                encode_ack(proto, Ack::PubRel, 5).unwrap(),
                vec![0x62, 0x02, 0x00, 0x05]
            );
        }
    }

    #[test]
    fn mqtt311_publish_drops_the_v5_properties() {
        let props = [("k".to_string(), "v".to_string())];
        let p = OutPublish {
            topic: "a/b",
            payload: b"x",
            qos: 1,
            pid: 3,
            dup: true,
            retain: false,
            user_properties: &props,
            content_type: Some("text/plain"),
            message_expiry_secs: Some(60),
        };
        match v3::Packet::decode(&encode_publish(Proto::V311, &p).unwrap())
            .unwrap()
            .unwrap()
        {
            v3::Packet::Publish(m) => {
                assert!(m.dup);
                assert_eq!(m.qos_pid.pid().map(|p| p.value()), Some(3));
            }
            other => panic!("{other:?}"),
        }
        match v5::Packet::decode(&encode_publish(Proto::V5, &p).unwrap())
            .unwrap()
            .unwrap()
        {
            v5::Packet::Publish(m) => {
                assert_eq!(m.properties.user_properties.len(), 1);
                assert_eq!(m.properties.message_expiry_interval, Some(60));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_packet_ids_are_an_encode_error_not_a_panic() {
        assert!(encode_ack(Proto::V5, Ack::PubAck, 0).is_err());
        assert!(encode_subscribe(Proto::V311, 0, &[("a/#".into(), 1)]).is_err());
    }
}
