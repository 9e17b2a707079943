//! Timers of offline sessions: a will waiting for its Will Delay Interval, and the end of the
//! session when its Session Expiry Interval runs out (MQTT 5.0 sections 3.1.2.11.2 and
//! 3.1.3.2.2). One small task per offline session that expires; resuming the session (a new
//! attach bumps its generation) makes the task do nothing.

use std::sync::Arc;
use std::time::Duration;

use super::handler::Handler;
use crate::broker::BrokerCore;
use crate::session::{NEVER_EXPIRES, Session};

/// Starts the timers of a session that just went offline: the will after `will_delay` seconds
/// (if any), the session's end after `expiry` seconds (unless [`NEVER_EXPIRES`]).
pub(crate) fn spawn_timer(
    core: Arc<BrokerCore>,
    session: Arc<Session>,
    will_delay: Option<u32>,
    expiry: u32,
) {
    let generation = session.state.lock().generation;
    let shutdown = core.shutdown.clone();
    let handle = session.clone();
    let task = tokio::spawn(async move {
        let run = async {
            let secs = |s: u32| Duration::from_secs(u64::from(s));
            let mut waited = 0;
            if let Some(delay) = will_delay {
                tokio::time::sleep(secs(delay)).await;
                waited = delay;
                if !still_offline(&session, generation) {
                    return;
                }
                if let Some(pending) = session.take_pending_will() {
                    Handler::publish_will(&core, &pending.client, &session, *pending.will);
                }
            }
            if expiry == NEVER_EXPIRES {
                return;
            }
            tokio::time::sleep(secs(expiry.saturating_sub(waited))).await;
            if core.sessions.expire(&session, generation) {
                tracing::debug!(client_id = %session.client_id, "session expired");
                // The session ends: a will still waiting goes out now.
                if let Some(pending) = session.take_pending_will() {
                    Handler::publish_will(&core, &pending.client, &session, *pending.will);
                }
                // Shared-subscription messages it kept go to another member rather than
                // being lost with it (section 4.8.2).
                let mut journal = core.journal();
                core.router.redeliver_shared(
                    &session,
                    &session.client_id,
                    true,
                    &core.metrics,
                    &mut journal,
                );
                core.submit(journal);
                core.router.remove_session(&session);
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run => {}
        }
    });
    let mut st = handle.state.lock();
    if st.generation == generation && st.connection.is_none() {
        if let Some(old) = st.timer.replace(task.abort_handle()) {
            old.abort();
        }
    } else {
        // Resumed in the meantime: the timer has nothing to do.
        task.abort();
    }
}

/// Whether the session is still offline since the timer started.
fn still_offline(session: &Session, generation: u64) -> bool {
    let st = session.state.lock();
    st.connection.is_none() && st.generation == generation && !st.discarded
}
