//! The stream task: a thin async driver around [`StreamCore`]. It takes batches of
//! validated readings and device status messages from bounded queues, operator actions,
//! rule changes and registry refreshes from a bounded command queue, ticks the core every
//! second on the wall clock, and moves what the core emits: values, windows and segment
//! states to the [`LiveHub`], alert outputs and periodic checkpoints of the alert engine's
//! state to the alert sink (a bounded queue; the sink persists them in order).
//!
//! Order on the sink queue is the invariant that makes restarts safe: a checkpoint is
//! queued after every alert output that preceded it, and the sink stores them in order,
//! so a saved engine state never holds an alert the store has not been asked to open.
//!
//! A checkpoint is incremental ([`crate::AlertEngine::checkpoint`]): `CheckpointBegin`
//! (head, book), the changed parts in chunks of [`CHECKPOINT_CHUNK`], then `CheckpointEnd`;
//! the sink saves them in one transaction. The driver queues them back to back, taking no
//! input into the core in between, so they are one consistent state; at most
//! [`CHUNKS_IN_FLIGHT`] chunks are queued at once, so a checkpoint's memory does not grow
//! with the fleet. Readings arriving while the sink writes the changed parts (seconds when
//! 100,000 devices all changed, `sccr-bench --checkpoint`; tens of milliseconds for a few
//! thousand) reach the live hub at once and wait, bounded, for the core: live values never
//! stall behind the database, windows and alerts lag by the checkpoint's duration.
//! When the sink could not save one, it sets `checkpoint_lost` and the next is full.
//!
//! Shutdown: when the readings queue closes, every pending window is flushed, a last
//! checkpoint is queued, and the sink queue is closed (the sink drains it and stops).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry::metrics::{self, Collector, Encoder, Histogram};
use telemetry::{EventTime, Reading, StatusEvent};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::alert::{AlertKey, AlertOutput, AlertState, EngineCheckpoint, RuleSet, StatePart};
use crate::live::{LiveAlert, LiveHub};
use crate::stream_core::{Emitted, OperatorAction, Registry, StreamCore};

/// Counters of the stream task.
#[derive(Debug)]
pub struct StreamMetrics {
    pub readings: AtomicU64,
    pub windows_emitted: AtomicU64,
    pub too_late: AtomicU64,
    pub segment_windows: AtomicU64,
    pub los_changes: AtomicU64,
    pub statuses: AtomicU64,
    /// Mirrors of the alert engine's counters.
    pub alerts_raised: AtomicU64,
    pub alerts_cleared: AtomicU64,
    pub alerts_suppressed: AtomicU64,
    pub alerts_duplicate: AtomicU64,
    /// Operator actions mirrored into the engine.
    pub operator_actions: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Device and segment parts queued by checkpoints.
    pub checkpoint_parts: AtomicU64,
    pub registry_updates: AtomicU64,
    /// How long each step of the stream's loop took (a batch of readings, a status, a
    /// command, a tick, a checkpoint, with what it emitted): live values wait behind a
    /// long one.
    pub steps: Histogram,
    /// Stored readings a core rebuilt its windows from when taking a partition over.
    pub rebuilt_readings: AtomicU64,
    /// Redeliveries of rebuilt readings, not windowed twice.
    pub redelivered: AtomicU64,
}

/// Bounds of [`StreamMetrics::steps`], in seconds.
const STEP_BUCKETS: [f64; 7] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

impl Default for StreamMetrics {
    fn default() -> Self {
        Self {
            readings: AtomicU64::default(),
            windows_emitted: AtomicU64::default(),
            too_late: AtomicU64::default(),
            segment_windows: AtomicU64::default(),
            los_changes: AtomicU64::default(),
            statuses: AtomicU64::default(),
            alerts_raised: AtomicU64::default(),
            alerts_cleared: AtomicU64::default(),
            alerts_suppressed: AtomicU64::default(),
            alerts_duplicate: AtomicU64::default(),
            operator_actions: AtomicU64::default(),
            checkpoints: AtomicU64::default(),
            checkpoint_parts: AtomicU64::default(),
            registry_updates: AtomicU64::default(),
            steps: Histogram::new(&STEP_BUCKETS),
            rebuilt_readings: AtomicU64::default(),
            redelivered: AtomicU64::default(),
        }
    }
}

impl Collector for StreamMetrics {
    fn encode(&self, mut e: Encoder) -> std::fmt::Result {
        let e = &mut e;
        let counters: [(&str, &str, &AtomicU64); 16] = [
            (
                "stream_rebuilt_readings",
                "Stored readings windows were rebuilt from when a partition was taken over.",
                &self.rebuilt_readings,
            ),
            (
                "stream_redelivered",
                "Redeliveries of readings the windows were rebuilt from (not windowed twice).",
                &self.redelivered,
            ),
            ("stream_readings", "Readings applied to live state and windows.", &self.readings),
            ("stream_windows", "Windows emitted (including corrections).", &self.windows_emitted),
            ("stream_too_late", "Readings later than the allowed lateness.", &self.too_late),
            (
                "stream_segment_windows",
                "Segment windows emitted (including corrections).",
                &self.segment_windows,
            ),
            (
                "stream_los_changes",
                "Changes of a segment's current Level of Service.",
                &self.los_changes,
            ),
            ("stream_statuses", "Device status messages evaluated.", &self.statuses),
            ("alerts_raised", "Alerts the engine raised.", &self.alerts_raised),
            (
                "alerts_cleared",
                "Alerts the engine cleared (automatically or mirrored).",
                &self.alerts_cleared,
            ),
            (
                "alerts_suppressed",
                "Raises the rate limit folded into an overflow alert.",
                &self.alerts_suppressed,
            ),
            (
                "alerts_duplicate_raises",
                "Raises of a condition whose alert was open.",
                &self.alerts_duplicate,
            ),
            (
                "alerts_operator_actions",
                "Operator acknowledgements and clears mirrored into the engine.",
                &self.operator_actions,
            ),
            ("stream_checkpoints", "Alert engine checkpoints taken.", &self.checkpoints),
            (
                "stream_checkpoint_parts",
                "Device and segment parts queued by checkpoints.",
                &self.checkpoint_parts,
            ),
            (
                "stream_registry_updates",
                "Device registry updates applied to the stream.",
                &self.registry_updates,
            ),
        ];
        for (name, help, value) in counters {
            metrics::counter(e, name, help, value.load(Ordering::Relaxed))?;
        }
        metrics::histogram(
            e,
            "stream_step",
            "Time of each step of the stream's loop (readings, status, command, tick or checkpoint, with what it emitted).",
            Some(&metrics::Unit::Seconds),
            &self.steps.snapshot(),
        )
    }
}

/// Parts per checkpoint chunk.
pub const CHECKPOINT_CHUNK: usize = 1_000;
/// Checkpoint chunks queued to the sink and not yet stored, at most (about 13 MB of parts):
/// a checkpoint of up to this many chunks never makes the core wait for the sink.
pub const CHUNKS_IN_FLIGHT: usize = 8;
/// Readings held for the core while a checkpoint is queued, at most (beyond them the
/// readings queue fills and ingest counts what the live view drops).
pub const HELD_READINGS: usize = 200_000;

/// Changed parts of a checkpoint; holds one of the [`CHUNKS_IN_FLIGHT`] permits until the
/// sink drops it.
#[derive(Debug)]
pub struct CheckpointChunk {
    pub parts: Vec<StatePart>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl CheckpointChunk {
    /// A chunk outside the driver's bound (tests, tools).
    pub fn unbounded(parts: Vec<StatePart>) -> Self {
        Self { parts, _permit: None }
    }
}

impl PartialEq for CheckpointChunk {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

/// What the stream sends the alert sink, in order.
// Outputs are the common item and travel by value; the rare checkpoint is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum AlertSinkItem {
    Output(AlertOutput),
    /// A checkpoint begins, to save once everything before it is stored; its chunks
    /// follow, and it is saved as one at `CheckpointEnd`.
    CheckpointBegin(Box<EngineCheckpoint>),
    CheckpointParts(CheckpointChunk),
    CheckpointEnd,
    /// Detector-health flag intervals opened or closed, in order.
    Flags(Vec<crate::alert::FlagEdge>),
}

/// Requests to the stream task.
#[derive(Debug)]
pub enum StreamCommand {
    /// The registry changed (or was re-read): segments, links, device profiles.
    Registry(Registry),
    /// Mirror an operator's action the store has already taken (`alert` is the stored
    /// result, which the live bus forwards to other replicas).
    Operator {
        action: OperatorAction,
        key: AlertKey,
        by: String,
        note: Option<String>,
        at: EventTime,
        alert: Box<LiveAlert>,
    },
    /// Replace the alert rules; `done` is answered once the engine runs them.
    SetRules { rules: RuleSet, done: oneshot::Sender<()> },
    /// The learned baselines the anomaly rules judge against (re-read after a refresh).
    Baselines(Arc<telemetry::baseline::Baselines>),
}

/// The baselines the anomaly rules in force need: (subject kind, metric name).
pub type BaselineNeeds =
    std::collections::BTreeSet<(telemetry::baseline::BaselineOn, &'static str)>;

/// The driver's own settings.
#[derive(Debug, Clone)]
pub struct StreamServiceConfig {
    /// How often the alert engine's state is checkpointed.
    pub checkpoint_interval: Duration,
    /// Set by the sink when it could not save a checkpoint: the next one is full.
    pub checkpoint_lost: Arc<AtomicBool>,
    /// Told the baselines the rules need, at start and after every rule change.
    pub baseline_needs: Option<tokio::sync::watch::Sender<BaselineNeeds>>,
}

impl Default for StreamServiceConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(30),
            checkpoint_lost: Arc::default(),
            baseline_needs: None,
        }
    }
}

/// The queues of the stream task.
pub struct StreamQueues {
    pub readings: mpsc::Receiver<Vec<Reading>>,
    pub statuses: mpsc::Receiver<StatusEvent>,
    pub commands: mpsc::Receiver<StreamCommand>,
    pub alerts: mpsc::Sender<AlertSinkItem>,
}

struct Driver {
    baseline_needs: Option<tokio::sync::watch::Sender<BaselineNeeds>>,
    core: StreamCore,
    hub: Arc<LiveHub>,
    alerts: mpsc::Sender<AlertSinkItem>,
    metrics: Arc<StreamMetrics>,
    checkpoint_lost: Arc<AtomicBool>,
    chunks: Arc<Semaphore>,
    /// The core's counters as last added to the metrics.
    seen: [u64; 6],
}

impl Driver {
    /// Publish and queue what the core emitted.
    async fn emit(&mut self, out: &mut Emitted) {
        let m = &self.metrics;
        if !out.windows.is_empty() {
            m.windows_emitted.fetch_add(out.windows.len() as u64, Ordering::Relaxed);
            self.hub.publish_windows(std::mem::take(&mut out.windows));
        }
        if !out.segments.is_empty() {
            m.segment_windows.fetch_add(out.segments.len() as u64, Ordering::Relaxed);
            self.hub.publish_segments(std::mem::take(&mut out.segments));
        }
        m.los_changes.fetch_add(std::mem::take(&mut out.los_changes), Ordering::Relaxed);
        for output in out.alerts.drain(..) {
            if self.alerts.send(AlertSinkItem::Output(output)).await.is_err() {
                tracing::error!("the alert sink is gone; alert changes are not stored");
            }
        }
        let flags = self.core.take_flags();
        if !flags.is_empty() && self.alerts.send(AlertSinkItem::Flags(flags)).await.is_err() {
            tracing::error!("the alert sink is gone; detector flags are not stored");
        }
        // Several cores may share the metrics (one per device partition): each adds what
        // its own counters grew by.
        let c = self.core.engine().counters();
        let now = [
            c.raised,
            c.cleared,
            c.suppressed_raises,
            c.duplicate_raises,
            self.core.too_late(),
            self.core.redelivered(),
        ];
        let targets = [
            &m.alerts_raised,
            &m.alerts_cleared,
            &m.alerts_suppressed,
            &m.alerts_duplicate,
            &m.too_late,
            &m.redelivered,
        ];
        for ((target, now), seen) in targets.into_iter().zip(now).zip(&mut self.seen) {
            target.fetch_add(now.saturating_sub(*seen), Ordering::Relaxed);
            *seen = now;
        }
    }

    /// Queue a checkpoint: begin, the changed parts chunk by chunk, end. The core takes
    /// nothing meanwhile, so the parts are one consistent state. Readings that arrive while
    /// the sink stores earlier chunks still go to the live hub at once (the wall does not
    /// stall behind the database) and are held, up to [`HELD_READINGS`], for the core
    /// once the checkpoint is queued.
    async fn checkpoint(
        &mut self,
        readings: &mut mpsc::Receiver<Vec<Reading>>,
        held: &mut Vec<Vec<Reading>>,
    ) {
        let Self { core, hub, alerts, metrics, checkpoint_lost, chunks, .. } = self;
        let force_full = checkpoint_lost.swap(false, Ordering::AcqRel);
        let (begin, mut parts) = core.checkpoint(force_full);
        if alerts.send(AlertSinkItem::CheckpointBegin(Box::new(begin))).await.is_err() {
            return;
        }
        let mut room = HELD_READINGS.saturating_sub(held.iter().map(Vec::len).sum());
        let mut open = true;
        loop {
            let permit = loop {
                tokio::select! {
                    biased;
                    permit = chunks.clone().acquire_owned() => break permit,
                    batch = readings.recv(), if open && room > 0 => match batch {
                        Some(batch) => {
                            hub.apply(&batch);
                            room = room.saturating_sub(batch.len());
                            held.push(batch);
                        }
                        None => open = false,
                    },
                }
            };
            let Ok(permit) = permit else { return };
            let chunk: Vec<StatePart> = parts.by_ref().take(CHECKPOINT_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            metrics.checkpoint_parts.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let item = CheckpointChunk { parts: chunk, _permit: Some(permit) };
            if alerts.send(AlertSinkItem::CheckpointParts(item)).await.is_err() {
                return;
            }
        }
        if alerts.send(AlertSinkItem::CheckpointEnd).await.is_ok() {
            metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn command(&mut self, command: StreamCommand, out: &mut Emitted) {
        let now = EventTime::now();
        match command {
            StreamCommand::Registry(registry) => {
                self.metrics.registry_updates.fetch_add(1, Ordering::Relaxed);
                self.core.set_registry(registry, now, out);
            }
            StreamCommand::Operator { action, key, by, note, at, alert } => {
                // The store's result decides: an acknowledgement that cleared the alert in
                // the store (it had returned there) clears it here too.
                let action = match action {
                    OperatorAction::Acknowledge if alert.state == AlertState::Cleared => {
                        OperatorAction::Clear
                    }
                    other => other,
                };
                match self.core.operator(action.clone(), &key, &by, note, at) {
                    Ok(true) => {
                        self.metrics.operator_actions.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {
                        tracing::debug!(%key, ?action, "operator action on an alert the engine no longer holds open")
                    }
                    Err(e) => {
                        tracing::debug!(%key, error = %e, "operator action already reflected in the engine")
                    }
                }
            }
            StreamCommand::SetRules { rules, done } => {
                self.core.set_rules(rules, now, out);
                if let Some(needs) = &self.baseline_needs {
                    needs.send_replace(self.core.baseline_needs());
                }
                let _ = done.send(());
            }
            StreamCommand::Baselines(baselines) => self.core.set_baselines(baselines),
        }
    }
}

/// Run until the readings queue closes (see the module doc for shutdown).
#[tracing::instrument(name = "stream", skip_all)]
pub async fn run_stream(
    core: StreamCore,
    config: StreamServiceConfig,
    hub: Arc<LiveHub>,
    queues: StreamQueues,
    metrics: Arc<StreamMetrics>,
) {
    let StreamQueues { mut readings, mut statuses, mut commands, alerts } = queues;
    let mut driver = Driver {
        core,
        hub,
        alerts,
        metrics,
        checkpoint_lost: config.checkpoint_lost.clone(),
        chunks: Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT)),
        seen: [0; 6],
        baseline_needs: config.baseline_needs.clone(),
    };
    if let Some(needs) = &driver.baseline_needs {
        needs.send_replace(driver.core.baseline_needs());
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut checkpoint =
        tokio::time::interval(config.checkpoint_interval.max(Duration::from_millis(100)));
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint.tick().await; // the first tick is immediate; the state was just loaded
    let (mut statuses_open, mut commands_open) = (true, true);
    let mut out = Emitted::default();
    let mut held = Vec::new();
    loop {
        let mut step_started = None;
        tokio::select! {
            batch = readings.recv() => match batch {
                Some(batch) => {
                    step_started = Some(Instant::now());
                    driver.hub.apply(&batch);
                    driver.core.on_readings(&batch, EventTime::now(), &mut out);
                    driver.metrics.readings.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                None => break,
            },
            status = statuses.recv(), if statuses_open => match status {
                Some(status) => {
                    step_started = Some(Instant::now());
                    driver.metrics.statuses.fetch_add(1, Ordering::Relaxed);
                    driver.hub.set_status(&status);
                    driver.core.on_status(&status, &mut out);
                }
                None => statuses_open = false,
            },
            command = commands.recv(), if commands_open => match command {
                Some(command) => {
                    step_started = Some(Instant::now());
                    driver.command(command, &mut out)
                }
                None => commands_open = false,
            },
            _ = tick.tick() => {
                step_started = Some(Instant::now());
                driver.core.tick(EventTime::now(), &mut out)
            }
            _ = checkpoint.tick() => {
                step_started = Some(Instant::now());
                driver.checkpoint(&mut readings, &mut held).await;
                for batch in held.drain(..) {
                    driver.core.on_readings(&batch, EventTime::now(), &mut out);
                    driver.metrics.readings.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
        }
        driver.emit(&mut out).await;
        if let Some(started) = step_started {
            driver.metrics.steps.observe(started.elapsed());
        }
    }
    driver.core.flush(EventTime::now(), &mut out);
    driver.emit(&mut out).await;
    driver.checkpoint(&mut readings, &mut held).await;
    tracing::info!("stream drained; windows flushed; alert state checkpointed");
}

#[cfg(test)]
mod tests {
    use telemetry::{DeviceId, DeviceState, MetricId};

    use super::*;
    use crate::alert::AlertRulesConfig;
    use crate::config::StreamConfig;

    fn rules() -> RuleSet {
        toml::from_str::<AlertRulesConfig>("air_quality_defaults = false\n[[rules]]\nid = \"offline\"\nseverity = \"warning\"\noffline = {}\n").unwrap().validate().unwrap()
    }

    struct Harness {
        readings: mpsc::Sender<Vec<Reading>>,
        statuses: mpsc::Sender<StatusEvent>,
        _commands: mpsc::Sender<StreamCommand>,
        sink: mpsc::Receiver<AlertSinkItem>,
        task: tokio::task::JoinHandle<()>,
        hub: Arc<LiveHub>,
    }

    fn start() -> Harness {
        start_with(Duration::from_secs(3600))
    }

    fn start_with(checkpoint_interval: Duration) -> Harness {
        let (readings, r_rx) = mpsc::channel(8);
        let (statuses, s_rx) = mpsc::channel(8);
        let (commands, c_rx) = mpsc::channel(8);
        let (sink_tx, sink) = mpsc::channel(4);
        let hub = LiveHub::new(64);
        let core = StreamCore::new(&StreamConfig::default(), rules());
        let queues =
            StreamQueues { readings: r_rx, statuses: s_rx, commands: c_rx, alerts: sink_tx };
        let task = tokio::spawn(run_stream(
            core,
            StreamServiceConfig { checkpoint_interval, ..StreamServiceConfig::default() },
            hub.clone(),
            queues,
            Arc::new(StreamMetrics::default()),
        ));
        Harness { readings, statuses, _commands: commands, sink, task, hub }
    }

    #[tokio::test]
    async fn a_last_will_reaches_the_sink_and_shutdown_ends_with_a_checkpoint() {
        let mut h = start();
        let dev = DeviceId::parse("loop-a").unwrap();
        h.statuses
            .send(StatusEvent {
                device: dev.clone(),
                state: DeviceState::Offline,
                received_at: EventTime::now(),
                retained: false,
            })
            .await
            .unwrap();
        let first =
            tokio::time::timeout(Duration::from_secs(5), h.sink.recv()).await.unwrap().unwrap();
        let AlertSinkItem::Output(AlertOutput::Transition { alert, .. }) = first else {
            panic!("{first:?}")
        };
        assert_eq!(alert.key.rule.as_str(), "offline");
        h.readings
            .send(vec![Reading {
                device: dev,
                metric: MetricId::SpeedKmh,
                time: EventTime::now(),
                value: 40.0,
                seq: None,
            }])
            .await
            .unwrap();
        let cleared =
            tokio::time::timeout(Duration::from_secs(5), h.sink.recv()).await.unwrap().unwrap();
        assert!(
            matches!(cleared, AlertSinkItem::Output(AlertOutput::Transition { ref transition, .. }) if transition.to == AlertState::Returned),
            "{cleared:?}"
        );
        assert_eq!(h.hub.len(), 1, "the value went live");
        drop(h.readings);
        let mut items = Vec::new();
        while let Some(item) = h.sink.recv().await {
            items.push(item);
        }
        let [AlertSinkItem::CheckpointBegin(begin), AlertSinkItem::CheckpointParts(chunk), AlertSinkItem::CheckpointEnd] =
            &items[..]
        else {
            panic!("the last items are a checkpoint: {items:?}")
        };
        assert!(begin.full, "the first checkpoint saves everything");
        let open: Vec<AlertState> =
            begin.book.iter().flat_map(|b| b.open_alerts.iter().map(|a| a.state)).collect();
        assert_eq!(open, [AlertState::Returned], "returned, unacknowledged: still open");
        let names: Vec<String> = chunk.parts.iter().map(StatePart::name).collect();
        assert_eq!(names, ["device/loop-a"]);
        h.task.await.unwrap();
    }

    fn reading(device: &str, value: f64) -> Reading {
        Reading {
            device: DeviceId::parse(device).unwrap(),
            metric: MetricId::SpeedKmh,
            time: EventTime::now(),
            value,
            seq: None,
        }
    }

    /// While the sink is still storing a checkpoint's earlier chunks, a new reading goes
    /// live at once; the core takes it once the checkpoint is queued (it is in the next).
    #[tokio::test]
    async fn readings_go_live_while_a_checkpoint_waits_for_the_sink() {
        let mut h = start_with(Duration::from_millis(100));
        let fleet: Vec<Reading> = (0..CHUNKS_IN_FLIGHT * CHECKPOINT_CHUNK + 500)
            .map(|i| reading(&format!("d{i}"), 30.0))
            .collect();
        h.readings.send(fleet).await.unwrap();
        // Hold the chunks of a checkpoint of the whole fleet: the driver then waits for a
        // permit to queue its last chunk.
        let mut held = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while held.len() < CHUNKS_IN_FLIGHT {
            let item = tokio::time::timeout_at(deadline, h.sink.recv()).await.unwrap().unwrap();
            match item {
                AlertSinkItem::CheckpointParts(chunk) if chunk.parts.len() == CHECKPOINT_CHUNK => {
                    held.push(chunk)
                }
                AlertSinkItem::CheckpointEnd => held.clear(),
                _ => {}
            }
        }
        h.readings.send(vec![reading("probe", 55.0)]).await.unwrap();
        let live = h.hub.len();
        while h.hub.len() == live {
            assert!(tokio::time::Instant::now() < deadline, "the reading did not go live");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        // Once queued, the checkpoint ends and the core takes the held reading: a later
        // checkpoint holds the probe's part.
        loop {
            let item = tokio::time::timeout_at(deadline, h.sink.recv()).await.unwrap().unwrap();
            if let AlertSinkItem::CheckpointParts(chunk) = item {
                if chunk.parts.iter().any(|p| p.name() == "device/probe") {
                    break;
                }
            }
        }
        drop(h.readings);
        while h.sink.recv().await.is_some() {}
        h.task.await.unwrap();
    }
}
