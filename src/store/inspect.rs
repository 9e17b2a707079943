//! `mqtt-server store inspect PATH`: what a store holds, read without starting a broker.

use std::fmt::Write as _;
use std::path::Path;

use super::redb_store::{RedbStore, read_all};
use super::{Recovered, StoreError, unix_millis};

/// Reads the store in directory `dir` and describes it: sessions (expiry, subscriptions,
/// queue depth, in-flight QoS 2 state, waiting will) and retained messages. Fails if the store
/// is missing, damaged, of another format, or open in a running broker (redb locks it).
pub fn inspect(dir: &Path) -> Result<String, StoreError> {
    let (path, db) = RedbStore::open_database_for_reading(dir)?;
    let state = read_all(&db, &path)?;
    drop(db);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(describe(&path, size, &state))
}

fn describe(path: &Path, size: u64, state: &Recovered) -> String {
    let mut out = String::new();
    let queued: usize = state.sessions.iter().map(|s| s.queue.len()).sum();
    let _ = writeln!(out, "store: {} ({size} bytes)", path.display());
    let _ = writeln!(
        out,
        "sessions: {}, queued messages: {queued}, retained messages: {}",
        state.sessions.len(),
        state.retained.len()
    );
    let now = unix_millis();
    for s in &state.sessions {
        let expiry = match s.record.expiry_interval {
            u32::MAX => "never expires".to_owned(),
            secs => format!("expires {secs} s after disconnect"),
        };
        let seen = match s.record.disconnected_at {
            Some(at) => format!("disconnected {} s ago", now.saturating_sub(at) / 1000),
            None => "connected when last written".to_owned(),
        };
        let released = s.queue.iter().filter(|(_, e)| e.released).count();
        let _ = writeln!(
            out,
            "  {:?}: {expiry}, {seen}; {} subscriptions, {} queued ({released} awaiting PUBCOMP), {} inbound QoS 2 awaiting PUBREL{}",
            &*s.client,
            s.subscriptions.len(),
            s.queue.len(),
            s.inbound.len(),
            if s.will.is_some() {
                ", a delayed will"
            } else {
                ""
            },
        );
        for (filter, granted) in &s.subscriptions {
            let _ = writeln!(
                out,
                "    subscription {:?} QoS {}",
                &**filter, granted.options.qos as u8
            );
        }
    }
    for m in &state.retained {
        let _ = writeln!(
            out,
            "  retained {:?}: {} bytes, QoS {}",
            &*m.topic,
            m.payload.len(),
            m.qos as u8
        );
    }
    out
}
