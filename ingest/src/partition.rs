//! Device affinity (docs/scale-out.md#device-affinity): every device belongs to one of
//! `partitions` partitions, by a stable hash of its partition key, its road segment when
//! it is linked to one (a segment's windows need all of its detectors in one process),
//! else its id. The hash is FNV-1a (64 bit) of the key's bytes: fixed by this code, the
//! same in every process, release and platform.
//!
//! Each partition has its own MQTT session, which receives every device's messages; the
//! session's owner processes its partition's devices and acknowledges the others at once
//! ([`PartitionFilter`]). Which partition a linked device belongs to follows the registry
//! each replica reads; when a link changes, the replicas see it at their own refresh, so
//! for [`PartitionMap::set_links`]'s grace a device counts as belonging to both its old
//! and its new partition: its messages may be processed twice (the store keeps a reading
//! once), never by neither.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use telemetry::{DeviceId, SegmentId};

/// The partition of a partition key, of `partitions` (at least 1).
pub fn partition_of(key: &str, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

/// Devices' partitions, from their links to road segments.
#[derive(Debug, Clone)]
pub struct PartitionMap {
    partitions: u16,
    links: HashMap<DeviceId, SegmentId>,
    /// The links before the last change, and until when they still count.
    previous: Option<(HashMap<DeviceId, SegmentId>, Instant)>,
}

impl PartitionMap {
    pub fn new(partitions: u16, links: HashMap<DeviceId, SegmentId>) -> Self {
        Self { partitions: partitions.max(1), links, previous: None }
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    fn of(partitions: u16, links: &HashMap<DeviceId, SegmentId>, device: &DeviceId) -> u16 {
        match links.get(device) {
            Some(segment) => partition_of(segment.as_str(), partitions),
            None => partition_of(device.as_str(), partitions),
        }
    }

    /// The device's partition under the current links.
    pub fn partition(&self, device: &DeviceId) -> u16 {
        Self::of(self.partitions, &self.links, device)
    }

    /// Does `device` belong to `partition`: under the current links, or under the previous
    /// ones while their grace lasts.
    pub fn belongs(&self, device: &DeviceId, partition: u16) -> bool {
        self.partition(device) == partition
            || self.previous.as_ref().is_some_and(|(links, until)| {
                Instant::now() < *until && Self::of(self.partitions, links, device) == partition
            })
    }

    /// New links; the old ones keep counting for `grace` (at least two registry refresh
    /// intervals, so that every replica has read the new ones before they stop).
    pub fn set_links(&mut self, links: HashMap<DeviceId, SegmentId>, grace: Duration) {
        if links == self.links {
            return;
        }
        let old = std::mem::replace(&mut self.links, links);
        self.previous = Some((old, Instant::now() + grace));
    }
}

/// The partition a session serves, and the shared map that says which devices it owns.
#[derive(Debug, Clone)]
pub struct PartitionFilter {
    pub partition: u16,
    pub map: Arc<RwLock<PartitionMap>>,
}

impl PartitionFilter {
    /// Does the message on `topic` belong to this partition? A topic that names no valid
    /// device is processed (and dead-lettered) by partition 0 only.
    pub fn takes(&self, topic: &str) -> bool {
        match telemetry::Topic::parse(topic) {
            Ok(t) => {
                let map = self.map.read().unwrap_or_else(|p| p.into_inner());
                map.belongs(&t.device, self.partition)
            }
            Err(_) => self.partition == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    #[test]
    fn the_hash_is_fixed_and_spreads_keys() {
        // FNV-1a 64 of known strings: the mapping must never change between releases.
        assert_eq!(partition_of("", 1_000), (0xcbf2_9ce4_8422_2325u64 % 1_000) as u16);
        assert_eq!(partition_of("a", 1_000), (0xaf63_dc4c_8601_ec8cu64 % 1_000) as u16);
        assert_eq!(partition_of("anything", 1), 0);
        let mut counts = [0u32; 3];
        for i in 0..3_000 {
            counts[usize::from(partition_of(&format!("loop-{i}"), 3))] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn a_linked_device_follows_its_segment_and_a_move_counts_for_both_during_the_grace() {
        let seg = SegmentId::parse("via-a").unwrap();
        let mut links = HashMap::new();
        links.insert(dev("loop-1"), seg.clone());
        links.insert(dev("loop-2"), seg.clone());
        let mut map = PartitionMap::new(7, links);
        assert_eq!(map.partition(&dev("loop-1")), partition_of("via-a", 7));
        assert_eq!(map.partition(&dev("loop-1")), map.partition(&dev("loop-2")));
        assert_eq!(map.partition(&dev("aq-9")), partition_of("aq-9", 7));
        // Unlinked: loop-1 goes by its id; during the grace it belongs to both.
        let (old, new) = (partition_of("via-a", 7), partition_of("loop-1", 7));
        assert_ne!(old, new, "pick ids that hash apart");
        map.set_links(HashMap::from([(dev("loop-2"), seg)]), Duration::from_secs(3600));
        assert_eq!(map.partition(&dev("loop-1")), new);
        assert!(map.belongs(&dev("loop-1"), old) && map.belongs(&dev("loop-1"), new));
        map.set_links(HashMap::new(), Duration::ZERO);
        assert!(!map.belongs(&dev("loop-1"), old), "the grace is over");
        let filter = PartitionFilter { partition: new, map: Arc::new(RwLock::new(map)) };
        assert!(filter.takes("sccr/v1/devices/loop-1/telemetry"));
        assert!(filter.takes("sccr/v1/devices/loop-1/status"));
        assert_eq!(filter.takes("sccr/v1/devices/NOT VALID/telemetry"), new == 0);
    }
}
