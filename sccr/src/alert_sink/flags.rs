//! Detector-health flag intervals (`stream::alert::health`), stored in the order the
//! stream made them: an open starts a device's interval of a rule (nothing if one is
//! open), a close ends it. Both are idempotent, so a retry after a transient error or a
//! replay after a restart records each interval once.

use store::{Store, StoreError};
use stream::FlagEdge;

pub(super) async fn store_flags(store: &Store, edges: &[FlagEdge]) -> Result<(), StoreError> {
    for edge in edges {
        match edge {
            FlagEdge::Open { device, rule, flag, since } => {
                store.open_flag(device, rule.as_str(), *flag, *since).await?;
            }
            FlagEdge::Close { device, rule, at, .. } => {
                store.close_flag(device, rule.as_str(), *at).await?;
            }
        }
    }
    Ok(())
}
