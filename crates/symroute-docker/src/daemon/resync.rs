//! The periodic (and after every reconnect) resync: the engine's list of
//! running containers is the truth; what is managed and no longer running
//! is released, every running container is reconciled.

use tracing::{debug, warn};

use super::container::Daemon;
use super::namespaces::Namespaces;
use crate::engine_api::EngineApi;

impl<N: Namespaces> Daemon<N> {
    pub(crate) async fn resync<A: EngineApi>(&mut self, api: &A) {
        let ids = match api.running().await {
            Ok(ids) => ids,
            Err(e) => {
                self.metrics.error();
                warn!(error = %e, "resync: cannot list containers");
                return;
            }
        };
        let gone: Vec<String> = self
            .managed
            .keys()
            .filter(|k| !ids.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.release(&id, "no longer running");
        }
        for id in &ids {
            self.reconcile(api, id, None).await;
        }
        debug!(
            running = ids.len(),
            managed = self.managed.len(),
            "resynced"
        );
    }
}
