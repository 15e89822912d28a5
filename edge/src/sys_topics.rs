//! `$SYS/broker/...`: the broker's figures under mosquitto's topic names and payload formats
//! (plain decimal text, `uptime` as "N seconds"), published every `sys_interval` seconds as
//! retained QoS 0 messages, in memory only (`Broker::publish_sys`). As in mosquitto, a topic is
//! published again only when its value changed. Clients may read `$SYS` but never publish there
//! (built-in ACL rule), and `#` / `+` subscriptions do not match it [MQTT-4.7.2-1].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::stats::Snapshot;

/// Load averages over 1, 5 and 15 minutes, as mosquitto's `load/.../1min` topics.
const LOAD_WINDOWS: [(u64, &str); 3] = [(60, "1min"), (300, "5min"), (900, "15min")];

/// Exponentially decayed rates (per minute) of one counter.
#[derive(Debug, Default)]
struct Load {
    last_total: Option<u64>,
    values: [f64; 3],
}

impl Load {
    /// Folds in the counter's new total, `elapsed` after the previous one (mosquitto's
    /// `calc_load`: new = rate + e^(-elapsed/window) * (old - rate), rate per minute).
    fn update(&mut self, total: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(prev) = self.last_total {
            if secs > 0.0 {
                let rate = total.saturating_sub(prev) as f64 * 60.0 / secs;
                for (v, (window, _)) in self.values.iter_mut().zip(LOAD_WINDOWS) {
                    let exponent = (-secs / window as f64).exp();
                    *v = rate + exponent * (*v - rate);
                }
            }
        }
        self.last_total = Some(total);
    }
}

/// The publisher's memory between two rounds.
#[derive(Debug, Default)]
pub struct SysState {
    last_round: Option<Instant>,
    received: Load,
    sent: Load,
    published: HashMap<String, String>,
}

impl SysState {
    /// The `$SYS` topics and payloads whose value changed since the last round.
    pub fn round(&mut self, s: &Snapshot, now: Instant) -> Vec<(String, String)> {
        let elapsed = self
            .last_round
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        self.last_round = Some(now);
        let c = &s.counters;
        let g = &s.gauges;
        // As mosquitto: `messages` are MQTT packets of every kind, `publish/messages` PUBLISH.
        self.received.update(c.packets_received, elapsed);
        self.sent.update(c.packets_sent, elapsed);
        let mut all: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("robustmq-edge version {}", s.version),
            ),
            ("uptime".into(), format!("{} seconds", s.uptime_secs as u64)),
            ("clients/connected".into(), s.connections.to_string()),
            (
                "clients/disconnected".into(),
                g.sessions_offline_persistent.to_string(),
            ),
            (
                "clients/total".into(),
                (s.connections + g.sessions_offline_persistent).to_string(),
            ),
            ("messages/received".into(), c.packets_received.to_string()),
            ("messages/sent".into(), c.packets_sent.to_string()),
            (
                "publish/messages/received".into(),
                c.messages_received().to_string(),
            ),
            (
                "publish/messages/sent".into(),
                c.messages_sent().to_string(),
            ),
            (
                "publish/messages/dropped".into(),
                c.dropped.iter().map(|(_, n)| n).sum::<u64>().to_string(),
            ),
            ("bytes/received".into(), c.bytes_received.to_string()),
            ("bytes/sent".into(), c.bytes_sent.to_string()),
            ("subscriptions/count".into(), g.subscriptions.to_string()),
            (
                "retained messages/count".into(),
                g.retained_messages.to_string(),
            ),
            ("store/messages/count".into(), g.queued_messages.to_string()),
            ("store/messages/bytes".into(), g.queued_bytes.to_string()),
        ];
        for (i, (_, window)) in LOAD_WINDOWS.iter().enumerate() {
            all.push((
                format!("load/messages/received/{window}"),
                format!("{:.2}", self.received.values[i]),
            ));
            all.push((
                format!("load/messages/sent/{window}"),
                format!("{:.2}", self.sent.values[i]),
            ));
        }
        all.into_iter()
            .filter_map(|(name, value)| {
                let topic = format!("$SYS/broker/{name}");
                if self.published.get(&topic) == Some(&value) {
                    return None;
                }
                self.published.insert(topic.clone(), value.clone());
                Some((topic, value))
            })
            .collect()
    }
}

/// Publishes the `$SYS` topics every `sys_interval` seconds (the task is not started when it
/// is 0). The first round runs at once, so a subscriber finds every topic retained.
pub async fn run(broker: Arc<Broker>) {
    let every = Duration::from_secs(broker.cfg.sys_interval.max(1));
    let mut state = SysState::default();
    loop {
        let snapshot = Snapshot::take(&broker);
        let changed = state.round(&snapshot, Instant::now());
        broker.publish_sys(changed);
        smol::Timer::after(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_converges_to_the_steady_rate_per_minute() {
        let mut l = Load::default();
        l.update(0, Duration::ZERO);
        for i in 1..=600u64 {
            // 10 messages a second, sampled every 10 s for 100 minutes.
            l.update(i * 100, Duration::from_secs(10));
        }
        assert!((l.values[0] - 600.0).abs() < 0.01, "{:?}", l.values);
        assert!((l.values[2] - 600.0).abs() < 1.0, "{:?}", l.values);
    }

    #[test]
    fn load_of_a_first_round_is_zero() {
        let mut l = Load::default();
        l.update(1_000, Duration::ZERO);
        assert_eq!(l.values, [0.0; 3]);
    }
}
