//! Device affinity (`ingest.partitions` > 1, docs/scale-out.md#device-affinity): which
//! partitions this replica owns, and one pipeline ([`super::ingest_side::start_pipeline`])
//! per owned partition.
//!
//! Ownership is a PostgreSQL session-level advisory lock per partition
//! ([`store::affinity::PartitionLocks`]), held on a connection of its own: a process that
//! dies frees its partitions the moment its connection closes, and no two live replicas
//! hold one. Every [`REBALANCE`] the manager surveys the locks: with `r` replicas alive it
//! owns at most `ceil(N / r)` partitions, takes free ones up to that (a dead replica's
//! among them), and gives up its surplus when replicas join (the pipeline stops in stages,
//! committing and acknowledging what it took, before the lock is released). A lost lock
//! connection stops every pipeline at once: another replica may own them now.
//!
//! The manager also fans the stream commands out to its pipelines: registry refreshes
//! (each pipeline gets its own partition's devices; the partition map takes the new
//! links), operator moves, rule changes (answered once every pipeline runs them) and
//! baselines; it keeps the latest of each for the pipelines it starts later.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Result;
use ingest::PartitionMap;
use store::affinity::PartitionLocks;
use stream::{Registry, StreamCommand};
use telemetry::metrics::{self, Collector, Encoder};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::ingest_side::{
    load_registry, start_pipeline, Pipeline, PipelinePartition, PipelineStart, Shared,
};

/// How often a replica surveys the partition locks.
pub const REBALANCE: Duration = Duration::from_secs(2);

/// Device affinity's figures, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct AffinityMetrics {
    pub partitions: u16,
    pub owned: Mutex<BTreeSet<u16>>,
    pub replicas: AtomicU64,
    pub takeovers: AtomicU64,
    pub releases: AtomicU64,
    pub lock_errors: AtomicU64,
}

impl AffinityMetrics {
    pub fn owned(&self) -> BTreeSet<u16> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_owned(&self, owned: impl IntoIterator<Item = u16>) {
        *self.owned.lock().unwrap_or_else(|p| p.into_inner()) = owned.into_iter().collect();
    }
}

impl Collector for AffinityMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let owned = self.owned();
        metrics::gauge(
            e,
            "ingest_partitions",
            "Device partitions of the deployment (ingest.partitions).",
            i64::from(self.partitions),
        )?;
        metrics::gauge(
            e,
            "ingest_partitions_owned",
            "Device partitions this replica owns.",
            owned.len() as i64,
        )?;
        let names: Vec<String> = (0..self.partitions).map(|p| p.to_string()).collect();
        metrics::gauge_by(
            e,
            "ingest_partition_owned",
            "1 for each device partition this replica owns.",
            "partition",
            names
                .iter()
                .enumerate()
                .map(|(p, n)| (n.as_str(), i64::from(owned.contains(&(p as u16))))),
        )?;
        metrics::gauge(
            e,
            "ingest_replicas",
            "Ingest replicas alive (holding the group's membership lock), as last surveyed.",
            self.replicas.load(Ordering::Relaxed) as i64,
        )?;
        metrics::counter(
            e,
            "ingest_partition_takeovers",
            "Partitions this replica took (started a pipeline for).",
            self.takeovers.load(Ordering::Relaxed),
        )?;
        metrics::counter(
            e,
            "ingest_partition_releases",
            "Partitions this replica gave up (pipeline stopped, lock released).",
            self.releases.load(Ordering::Relaxed),
        )?;
        metrics::counter(
            e,
            "ingest_partition_lock_errors",
            "Failures of the partition lock connection (every pipeline stopped).",
            self.lock_errors.load(Ordering::Relaxed),
        )
    }
}

struct Owned {
    pipeline: Pipeline,
    stop: watch::Sender<bool>,
}

struct Manager {
    shared: Shared,
    map: Arc<RwLock<PartitionMap>>,
    rules: stream::RuleSet,
    registry: Registry,
    baselines: Option<Arc<telemetry::baseline::Baselines>>,
    running: BTreeMap<u16, Owned>,
    locks: Option<PartitionLocks>,
    metrics: Arc<AffinityMetrics>,
    /// Where this replica starts looking for free partitions (spreads first claims).
    offset: u16,
}

/// The device links of a registry.
fn links(
    registry: &Registry,
) -> std::collections::HashMap<telemetry::DeviceId, telemetry::SegmentId> {
    registry.devices.iter().filter_map(|d| d.segment.clone().map(|s| (d.id.clone(), s))).collect()
}

/// Join the partition owners of `mqtt.group` and start managing partitions.
pub(super) async fn start(
    shared: Shared,
    rules: stream::RuleSet,
    registry: Registry,
    commands: mpsc::Receiver<StreamCommand>,
    shutdown: watch::Receiver<bool>,
) -> Result<(JoinHandle<()>, Arc<AffinityMetrics>)> {
    let n = shared.config.ingest.partitions;
    let locks = shared.store.partition_locks(&shared.config.mqtt.group).await?;
    let metrics = Arc::new(AffinityMetrics { partitions: n, ..AffinityMetrics::default() });
    let map = Arc::new(RwLock::new(PartitionMap::new(n, links(&registry))));
    let offset = ingest::partition_of(&shared.config.mqtt.client_id, n);
    let manager = Manager {
        shared,
        map,
        rules,
        registry,
        baselines: None,
        running: BTreeMap::new(),
        locks: Some(locks),
        metrics: metrics.clone(),
        offset,
    };
    Ok((tokio::spawn(manager.run(commands, shutdown)), metrics))
}

impl Manager {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<StreamCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(REBALANCE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                stop = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => {
                    let _ = stop;
                    break;
                }
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => break,
                },
                _ = tick.tick() => self.rebalance().await,
            }
        }
        let owned: Vec<u16> = self.running.keys().copied().collect();
        for p in owned {
            self.stop(p).await;
            if let Some(locks) = &mut self.locks {
                let _ = locks.release(p).await;
            }
        }
        if let Some(locks) = self.locks.take() {
            locks.close().await;
        }
        self.metrics.set_owned([]);
    }

    /// The registry as partition `p`'s pipeline sees it: its own devices only.
    fn registry_for(&self, p: u16) -> Registry {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut registry = self.registry.clone();
        registry.devices.retain(|d| map.belongs(&d.id, p));
        registry
    }

    async fn command(&mut self, command: StreamCommand) {
        match command {
            StreamCommand::Registry(registry) => {
                let grace = self.shared.config.stream.registry_refresh * 2 + REBALANCE;
                self.map
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_links(links(&registry), grace);
                self.registry = registry;
                for (&p, owned) in &self.running {
                    let registry = self.registry_for(p);
                    let _ = owned.pipeline.commands.send(StreamCommand::Registry(registry)).await;
                }
            }
            StreamCommand::SetRules { rules, done } => {
                self.rules = rules.clone();
                let mut applied = Vec::new();
                for owned in self.running.values() {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let set = StreamCommand::SetRules { rules: rules.clone(), done: tx };
                    if owned.pipeline.commands.send(set).await.is_ok() {
                        applied.push(rx);
                    }
                }
                for rx in applied {
                    let _ = rx.await;
                }
                let _ = done.send(());
            }
            StreamCommand::Baselines(baselines) => {
                self.baselines = Some(baselines.clone());
                for owned in self.running.values() {
                    let _ = owned
                        .pipeline
                        .commands
                        .send(StreamCommand::Baselines(baselines.clone()))
                        .await;
                }
            }
            StreamCommand::Operator { action, key, by, note, at, alert } => {
                // Only the pipeline whose engine holds the alert acts on it.
                for owned in self.running.values() {
                    let op = StreamCommand::Operator {
                        action: action.clone(),
                        key: key.clone(),
                        by: by.clone(),
                        note: note.clone(),
                        at,
                        alert: alert.clone(),
                    };
                    let _ = owned.pipeline.commands.send(op).await;
                }
            }
        }
    }

    /// Survey the locks; give up a surplus partition or take free ones.
    async fn rebalance(&mut self) {
        if self.locks.is_none() {
            match self.shared.store.partition_locks(&self.shared.config.mqtt.group).await {
                Ok(locks) => self.locks = Some(locks),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reconnect the partition locks");
                    return;
                }
            }
        }
        let Some(locks) = &mut self.locks else { return };
        let (replicas, taken) = match locks.survey().await {
            Ok(survey) => survey,
            Err(e) => return self.lost(e).await,
        };
        self.metrics.replicas.store(u64::from(replicas), Ordering::Relaxed);
        let n = self.shared.config.ingest.partitions;
        let target = usize::from(n).div_ceil(replicas as usize);
        if self.running.len() > target {
            // A replica joined: hand one partition over (one per survey, so that the
            // others see the change before more moves).
            if let Some(&p) = self.running.keys().next_back() {
                tracing::info!(partition = p, replicas, "giving a partition up to rebalance");
                self.stop(p).await;
                if let Some(locks) = &mut self.locks {
                    if let Err(e) = locks.release(p).await {
                        return self.lost(e).await;
                    }
                }
                self.metrics.releases.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            for i in 0..n {
                if self.running.len() >= target {
                    break;
                }
                let p = (self.offset + i) % n;
                if taken.contains(&p) || self.running.contains_key(&p) {
                    continue;
                }
                let Some(locks) = &mut self.locks else { return };
                match locks.try_take(p).await {
                    Ok(true) => self.take(p).await,
                    Ok(false) => {}
                    Err(e) => return self.lost(e).await,
                }
            }
        }
        self.metrics.set_owned(self.running.keys().copied());
    }

    /// Start partition `p`'s pipeline (its lock is held).
    async fn take(&mut self, p: u16) {
        let (stop, stop_rx) = watch::channel(false);
        // Open alerts and the registry as the store holds them now: the previous owner
        // may have changed both.
        let store_open = match self
            .shared
            .store
            .alerts(&store::AlertFilter { limit: 100_000, ..store::AlertFilter::open() })
            .await
        {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot read open alerts; partition left for later");
                self.give_back(p).await;
                return;
            }
        };
        if let Ok(registry) = load_registry(&self.shared.store).await {
            self.map.write().unwrap_or_else(|e| e.into_inner()).set_links(
                links(&registry),
                self.shared.config.stream.registry_refresh * 2 + REBALANCE,
            );
            self.registry = registry;
        }
        let start = PipelineStart {
            rules: self.rules.clone(),
            registry: self.registry_for(p),
            baselines: self.baselines.clone(),
            store_open,
        };
        let partition = PipelinePartition { partition: p, map: self.map.clone() };
        match start_pipeline(&self.shared, Some(partition), start, stop_rx).await {
            Ok(pipeline) => {
                tracing::info!(partition = p, "partition taken");
                self.metrics.takeovers.fetch_add(1, Ordering::Relaxed);
                self.running.insert(p, Owned { pipeline, stop });
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot start the partition's pipeline; partition left for later");
                self.give_back(p).await;
            }
        }
    }

    async fn give_back(&mut self, p: u16) {
        if let Some(locks) = &mut self.locks {
            if let Err(e) = locks.release(p).await {
                self.lost(e).await;
            }
        }
    }

    /// Stop partition `p`'s pipeline in stages (its lock is still held).
    async fn stop(&mut self, p: u16) {
        let Some(owned) = self.running.remove(&p) else { return };
        let _ = owned.stop.send(true);
        drop(owned.pipeline.commands);
        for (name, task) in owned.pipeline.tasks {
            if let Err(e) = task.await {
                tracing::error!(partition = p, task = name, error = %e, "task ended abnormally");
            }
        }
        tracing::info!(partition = p, "partition pipeline stopped");
    }

    /// The lock connection failed: the locks are gone with it, so another replica may own
    /// the partitions now. Stop every pipeline at once; reconnect at the next survey.
    async fn lost(&mut self, error: store::StoreError) {
        tracing::error!(%error, "partition lock connection lost; stopping every partition");
        self.metrics.lock_errors.fetch_add(1, Ordering::Relaxed);
        self.locks = None;
        let owned: Vec<u16> = self.running.keys().copied().collect();
        for p in owned {
            self.stop(p).await;
        }
        self.metrics.set_owned([]);
    }
}
