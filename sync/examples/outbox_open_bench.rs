//! Shows that `Outbox::open` does not scan: fills a temporary outbox with N small records
//! (default 1,000,000) through `capture`, reopens the database and times `open`.
//!
//! `cargo run -p robustmq-edge-sync --release --example outbox_open_bench [-- N]`

use std::sync::Arc;
use std::time::Instant;

use edge_sync::{LocalMessage, Outbox, SyncConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("edge.redb");
    let cfg = SyncConfig::from_toml_str(
        "node_id = \"bench\"\nupstreams = [\"tcp://127.0.0.1:1883\"]\n\
         max_backlog_bytes = 10000000000\n[[forward]]\nfilter = \"#\"\n",
    )?;
    let payload = [b'x'; 32];
    let t0 = Instant::now();
    {
        let db = Arc::new(redb::Database::create(&path)?);
        let ob = Outbox::open(db.clone(), &cfg)?;
        let mut done = 0;
        while done < n {
            let mut txn = db.begin_write()?;
            txn.set_durability(redb::Durability::None)?;
            let batch = (n - done).min(20_000);
            for _ in 0..batch {
                ob.capture(
                    &txn,
                    &LocalMessage {
                        topic: "sensors/7/temp",
                        payload: &payload,
                        qos: 1,
                        retain: false,
                        user_properties: &[],
                        content_type: None,
                        received_at_ms: edge_sync::outbox::now_ms(),
                    },
                )?;
            }
            txn.commit()?;
            ob.committed(true);
            done += batch;
        }
        ob.flush()?;
    }
    println!("filled {n} records in {:?}", t0.elapsed());
    let db = Arc::new(redb::Database::open(&path)?);
    let t1 = Instant::now();
    let ob = Outbox::open(db, &cfg)?;
    let took = t1.elapsed();
    let c = ob.counters();
    println!(
        "open with {} buffered records ({} bytes): {:?}",
        c.backlog_messages, c.backlog_bytes, took
    );
    assert_eq!(c.backlog_messages as usize, n);
    Ok(())
}
