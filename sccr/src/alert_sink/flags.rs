//! Detector-health flag intervals (`stream::alert::health`), stored in the order the
//! stream made them: an open starts a device's interval of a rule (nothing if one is
//! open), a close ends it. Both are idempotent, so a retry after a transient error or a
//! replay after a restart records each interval once.

use std::sync::atomic::Ordering;

use store::{Store, StoreError};
use stream::FlagEdge;

use crate::metrics::AlertSinkMetrics;

pub(super) async fn store_flags(
    store: &Store,
    edges: &[FlagEdge],
    m: &AlertSinkMetrics,
) -> Result<(), StoreError> {
    for edge in edges {
        match edge {
            FlagEdge::Open { device, rule, flag, since } => {
                if store.open_flag(device, rule.as_str(), *flag, *since).await? {
                    m.flags_opened.fetch_add(1, Ordering::Relaxed);
                }
            }
            FlagEdge::Close { device, rule, at, .. } => {
                if store.close_flag(device, rule.as_str(), *at).await? {
                    m.flags_closed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}
