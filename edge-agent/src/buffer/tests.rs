//! Tests of the disk buffer: unit tests of the API and of recovery, and a model-based
//! property test that crashes the buffer and tears and corrupts its files at random.
//!
//! The tests read the files with their own parser (`walk`, `disk_watermark`) rather than
//! the buffer's, so a bug in the buffer's reader cannot hide itself. Recovery from damaged
//! files is in `tests/recovery.rs`, the model-based test in `tests/model.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system temp dir, removed when the test ends (also on panic).
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir()
            .join(format!("sccr-buffer-{name}-{}-{n}-{nanos}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TestDir(path)
    }

    fn config(&self, segment_bytes: u64, max_bytes: u64, fsync: FsyncPolicy) -> BufferConfig {
        BufferConfig { dir: self.0.clone(), max_bytes, segment_bytes, fsync }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A payload that differs for every `i`, so a mix-up between records shows.
fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j * 7 + 1) as u8).collect()
}

fn ids(batch: &[(RecordId, Vec<u8>)]) -> Vec<u64> {
    batch.iter().map(|(id, _)| id.0).collect()
}

/// Segment file names, in order.
fn seg_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

fn seg_name(first_id: u64) -> String {
    format!("seg-{first_id:020}.log")
}

/// The persisted watermark as the file says (0 when there is none yet).
fn disk_watermark(dir: &Path) -> u64 {
    let bytes = match fs::read(dir.join("ack")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => panic!("reading ack file: {e}"),
    };
    assert_eq!(bytes.len(), 12, "ack file length");
    let wm = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(
        u32::from_le_bytes(bytes[8..].try_into().unwrap()),
        crc32fast::hash(&bytes[..8]),
        "ack file crc"
    );
    wm
}

fn flip_byte(path: &Path, pos: u64, xor: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[pos as usize] ^= xor;
    fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

#[derive(Debug)]
struct WalkedRec {
    id: u64,
    offset: u64,
    /// Header and payload.
    total: u64,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct WalkedSeg {
    path: PathBuf,
    len: u64,
    records: Vec<WalkedRec>,
}

/// Parse every segment, asserting that each is a clean sequence of intact records (which
/// the files must be whenever no test has tampered with them since the last open).
fn walk(dir: &Path) -> Vec<WalkedSeg> {
    let mut segs = Vec::new();
    for name in seg_files(dir) {
        let first_id: u64 = name["seg-".len()..name.len() - ".log".len()].parse().unwrap();
        let path = dir.join(&name);
        let bytes = fs::read(&path).unwrap();
        let mut records: Vec<WalkedRec> = Vec::new();
        let mut off = 0usize;
        while off < bytes.len() {
            assert!(bytes.len() - off >= 16, "{name}: partial header at {off}");
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
            let id = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
            assert!(bytes.len() - off - 16 >= len, "{name}: partial payload at {off}");
            let payload = bytes[off + 16..off + 16 + len].to_vec();
            let mut h = crc32fast::Hasher::new();
            h.update(&id.to_le_bytes());
            h.update(&payload);
            assert_eq!(h.finalize(), crc, "{name}: bad crc at {off}");
            assert!(id >= first_id, "{name}: id {id} below the segment's first id");
            assert!(records.last().is_none_or(|r| r.id < id), "{name}: ids out of order at {off}");
            records.push(WalkedRec { id, offset: off as u64, total: (16 + len) as u64, payload });
            off += 16 + len;
        }
        segs.push(WalkedSeg { path, len: bytes.len() as u64, records });
    }
    segs
}

const BIG: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------
// Unit tests
// ---------------------------------------------------------------------------------------

#[test]
fn append_hand_out_ack_rewind_order() {
    let d = TestDir::new("order");
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    for i in 0..5 {
        assert_eq!(b.append(&payload(i, 10)).unwrap(), RecordId(i));
    }
    assert_eq!(
        b.next_unsent(2).unwrap(),
        vec![(RecordId(0), payload(0, 10)), (RecordId(1), payload(1, 10))]
    );
    assert_eq!(ids(&b.next_unsent(2).unwrap()), [2, 3]);
    b.ack(RecordId(1)).unwrap();
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [4]);
    assert!(b.next_unsent(10).unwrap().is_empty());
    assert!(b.next_unsent(0).unwrap().is_empty());

    // Lost connection: everything unacked again, in order, byte-identical.
    b.rewind();
    let again = b.next_unsent(10).unwrap();
    assert_eq!(
        again,
        [0, 2, 3, 4].iter().map(|&i| (RecordId(i), payload(i, 10))).collect::<Vec<_>>()
    );

    // New records come after the ones already handed out in this pass.
    assert_eq!(b.append(&payload(5, 3)).unwrap(), RecordId(5));
    assert_eq!(b.next_unsent(10).unwrap(), vec![(RecordId(5), payload(5, 3))]);

    // Acking twice is harmless; acking an id never appended is an error.
    b.ack(RecordId(1)).unwrap();
    match b.ack(RecordId(6)) {
        Err(BufferError::UnknownRecord { id: RecordId(6), next: RecordId(6) }) => {}
        other => panic!("expected UnknownRecord, got {other:?}"),
    }
    assert_eq!(b.stats(), BufferStats { records: 5, bytes: 5 * 26 + 19, ..BufferStats::default() });
}

#[test]
fn empty_payload_round_trips() {
    let d = TestDir::new("empty");
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    assert_eq!(b.append(&[]).unwrap(), RecordId(0));
    drop(b);
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    assert_eq!(b.next_unsent(5).unwrap(), vec![(RecordId(0), Vec::new())]);
    assert_eq!(b.stats().bytes, 16);
}

#[test]
fn reopen_after_clean_close_keeps_unacked_and_drops_acked() {
    let d = TestDir::new("reopen");
    let cfg = || d.config(1 << 20, BIG, FsyncPolicy::Always);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    for i in 0..6 {
        b.append(&payload(i, 20 + i as usize)).unwrap();
    }
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [0, 1, 2, 3, 4, 5]);
    for i in [0, 1, 2] {
        b.ack(RecordId(i)).unwrap();
    }
    drop(b); // clean close persists the watermark

    assert_eq!(disk_watermark(&d.0), 3);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(b.stats().records, 3);
    let back = b.next_unsent(10).unwrap();
    assert_eq!(
        back,
        (3..6).map(|i| (RecordId(i), payload(i, 20 + i as usize))).collect::<Vec<_>>()
    );
    // Ids continue after the highest one ever used.
    assert_eq!(b.append(b"x").unwrap(), RecordId(6));

    // Ack everything: after a clean close nothing is held and ids still continue.
    for i in 3..7 {
        b.ack(RecordId(i)).unwrap();
    }
    drop(b);
    assert_eq!(disk_watermark(&d.0), 7);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(b.stats().records, 0);
    assert!(b.next_unsent(10).unwrap().is_empty());
    assert_eq!(b.append(b"y").unwrap(), RecordId(7));
}

#[test]
fn out_of_order_acks_advance_the_watermark_over_contiguous_ids() {
    let d = TestDir::new("ooo");
    let cfg = || d.config(1 << 20, BIG, FsyncPolicy::Always);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    for i in 0..5 {
        b.append(&payload(i, 8)).unwrap();
    }
    b.next_unsent(10).unwrap();
    for i in [3, 1, 4] {
        b.ack(RecordId(i)).unwrap();
    }
    assert_eq!(b.stats().records, 2);
    b.sync().unwrap();
    assert_eq!(disk_watermark(&d.0), 0, "0 is unacked, so nothing is below the watermark");
    b.ack(RecordId(0)).unwrap();
    b.sync().unwrap();
    assert_eq!(disk_watermark(&d.0), 2, "0 and 1 acked, 2 not");
    b.rewind();
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [2]);

    // Crash: acks above the watermark were not persisted, so 3 and 4 come back (once).
    b.simulate_crash();
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(
        b.next_unsent(10).unwrap(),
        (2..5).map(|i| (RecordId(i), payload(i, 8))).collect::<Vec<_>>()
    );
    for i in [4, 2, 3] {
        b.ack(RecordId(i)).unwrap();
    }
    b.sync().unwrap();
    assert_eq!(disk_watermark(&d.0), 5);
    b.simulate_crash();
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(b.stats().records, 0);
    assert!(b.next_unsent(10).unwrap().is_empty());
    assert_eq!(b.append(b"z").unwrap(), RecordId(5));
}

#[test]
fn watermark_is_persisted_every_64_acks() {
    let d = TestDir::new("every64");
    let cfg = || d.config(1 << 20, BIG, FsyncPolicy::Never);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    for i in 0..70 {
        b.append(&payload(i, 1)).unwrap();
    }
    assert_eq!(b.next_unsent(100).unwrap().len(), 70);
    for i in 0..63 {
        b.ack(RecordId(i)).unwrap();
    }
    assert_eq!(disk_watermark(&d.0), 0);
    b.ack(RecordId(63)).unwrap();
    assert_eq!(disk_watermark(&d.0), 64);
    for i in 64..69 {
        b.ack(RecordId(i)).unwrap();
    }
    assert_eq!(disk_watermark(&d.0), 64);

    // 64..68 were acked after the last persist: they come back once, with 69.
    b.simulate_crash();
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(ids(&b.next_unsent(100).unwrap()), (64..70).collect::<Vec<_>>());
}

#[test]
fn full_buffer_drops_oldest_segments_with_exact_count() {
    let d = TestDir::new("full");
    // 34-byte payloads make 50-byte records: two per segment, three segments fit.
    let cfg = || d.config(100, 300, FsyncPolicy::Always);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    let expected_dropped = [0, 0, 0, 0, 0, 0, 2, 2, 4, 4];
    for i in 0..10u64 {
        assert_eq!(b.append(&payload(i, 34)).unwrap(), RecordId(i));
        assert_eq!(b.stats().dropped, expected_dropped[i as usize], "after appending {i}");
        assert!(b.stats().bytes <= 300);
    }
    assert_eq!(
        b.stats(),
        BufferStats { records: 6, bytes: 300, dropped: 4, ..BufferStats::default() }
    );
    assert_eq!(seg_files(&d.0), [seg_name(4), seg_name(6), seg_name(8)]);
    assert_eq!(
        b.next_unsent(100).unwrap(),
        (4..10).map(|i| (RecordId(i), payload(i, 34))).collect::<Vec<_>>()
    );

    // An acked record in a dropped segment is not counted as dropped.
    b.ack(RecordId(4)).unwrap();
    assert_eq!(b.append(&payload(10, 34)).unwrap(), RecordId(10));
    assert_eq!(
        b.stats(),
        BufferStats { records: 5, bytes: 250, dropped: 5, ..BufferStats::default() }
    );
    assert_eq!(seg_files(&d.0), [seg_name(6), seg_name(8), seg_name(10)]);
    // Dropped records count as gone: the watermark moved past them, and a late ack is a no-op.
    assert_eq!(disk_watermark(&d.0), 6);
    b.ack(RecordId(5)).unwrap();
    b.rewind();
    assert_eq!(ids(&b.next_unsent(100).unwrap()), [6, 7, 8, 9, 10]);

    drop(b);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(b.stats(), BufferStats { records: 5, bytes: 250, ..BufferStats::default() });
    assert_eq!(ids(&b.next_unsent(100).unwrap()), [6, 7, 8, 9, 10]);
    // Drop counts restart at open; this one fits, the next one drops seg-6.
    assert_eq!(b.append(&payload(11, 34)).unwrap(), RecordId(11));
    assert_eq!(b.stats(), BufferStats { records: 6, bytes: 300, ..BufferStats::default() });
    assert_eq!(b.append(&payload(12, 34)).unwrap(), RecordId(12));
    assert_eq!(
        b.stats(),
        BufferStats { records: 5, bytes: 250, dropped: 2, ..BufferStats::default() }
    );
    assert_eq!(seg_files(&d.0), [seg_name(8), seg_name(10), seg_name(12)]);
}

#[test]
fn record_larger_than_max_bytes_is_refused() {
    let d = TestDir::new("toolarge");
    let mut b = DiskBuffer::open(d.config(1000, 100, FsyncPolicy::Always)).unwrap();
    match b.append(&payload(0, 85)) {
        Err(BufferError::TooLarge { size: 101, limit: 100 }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(b.stats(), BufferStats::default());
    assert!(seg_files(&d.0).is_empty());
    // Exactly max_bytes fits, and the refused record did not use up an id.
    assert_eq!(b.append(&payload(0, 84)).unwrap(), RecordId(0));
    assert_eq!(b.stats().bytes, 100);
    // The next record only fits once the (active, only) segment is dropped.
    assert_eq!(b.append(&[]).unwrap(), RecordId(1));
    assert_eq!(
        b.stats(),
        BufferStats { records: 1, bytes: 16, dropped: 1, ..BufferStats::default() }
    );
    assert_eq!(seg_files(&d.0), [seg_name(1)]);
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [1]);
}

#[test]
fn fully_acked_segments_are_deleted() {
    let d = TestDir::new("delete");
    let cfg = || d.config(100, BIG, FsyncPolicy::Always);
    let mut b = DiskBuffer::open(cfg()).unwrap();
    for i in 0..6 {
        b.append(&payload(i, 34)).unwrap();
    }
    assert_eq!(seg_files(&d.0), [seg_name(0), seg_name(2), seg_name(4)]);
    assert_eq!(b.stats().bytes, 300);
    b.next_unsent(10).unwrap();

    // A middle segment acked out of order goes at once, though the watermark cannot move.
    b.ack(RecordId(3)).unwrap();
    assert_eq!(seg_files(&d.0).len(), 3);
    b.ack(RecordId(2)).unwrap();
    assert_eq!(seg_files(&d.0), [seg_name(0), seg_name(4)]);
    assert_eq!(b.stats().bytes, 200);
    assert_eq!(disk_watermark(&d.0), 0);

    b.ack(RecordId(0)).unwrap();
    assert_eq!(seg_files(&d.0), [seg_name(0), seg_name(4)]);
    b.ack(RecordId(1)).unwrap();
    assert_eq!(seg_files(&d.0), [seg_name(4)]);
    assert_eq!(disk_watermark(&d.0), 4, "persisted before the segment was deleted");

    // The segment still being appended to stays until it is sealed...
    b.ack(RecordId(4)).unwrap();
    b.ack(RecordId(5)).unwrap();
    assert_eq!(seg_files(&d.0), [seg_name(4)]);
    assert_eq!(b.stats(), BufferStats { records: 0, bytes: 100, ..BufferStats::default() });
    // ...which the next append does, as it is full.
    assert_eq!(b.append(&payload(6, 34)).unwrap(), RecordId(6));
    assert_eq!(seg_files(&d.0), [seg_name(6)]);
    assert_eq!(disk_watermark(&d.0), 6);
    assert_eq!(b.stats(), BufferStats { records: 1, bytes: 50, ..BufferStats::default() });

    b.simulate_crash();
    let mut b = DiskBuffer::open(cfg()).unwrap();
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [6]);
    assert_eq!(b.append(b"a").unwrap(), RecordId(7));
}
#[test]
fn fsync_policies_all_work() {
    // Appends not yet fsynced after each of 7 appends.
    let cases: [(FsyncPolicy, [u32; 7]); 4] = [
        (FsyncPolicy::Always, [0, 0, 0, 0, 0, 0, 0]),
        (FsyncPolicy::EveryN(3), [1, 2, 0, 1, 2, 0, 1]),
        (FsyncPolicy::EveryN(1), [0, 0, 0, 0, 0, 0, 0]),
        (FsyncPolicy::Never, [1, 2, 3, 4, 5, 6, 7]),
    ];
    for (policy, unsynced) in cases {
        let d = TestDir::new("fsync");
        let cfg = || d.config(1 << 20, BIG, policy);
        let mut b = DiskBuffer::open(cfg()).unwrap();
        for i in 0..7 {
            assert_eq!(b.append(&payload(i, 40)).unwrap(), RecordId(i));
            assert_eq!(b.unsynced_appends, unsynced[i as usize], "{policy:?} after append {i}");
        }
        b.ack(RecordId(0)).unwrap();
        b.sync().unwrap();
        assert_eq!(b.unsynced_appends, 0, "{policy:?}: sync() flushes whatever the policy");
        assert_eq!(disk_watermark(&d.0), 1);
        b.append(&payload(7, 40)).unwrap();

        // A process crash loses nothing whatever the policy: the data is in the page cache.
        b.simulate_crash();
        let mut b = DiskBuffer::open(cfg()).unwrap();
        assert_eq!(
            b.next_unsent(100).unwrap(),
            (1..8).map(|i| (RecordId(i), payload(i, 40))).collect::<Vec<_>>(),
            "{policy:?}"
        );
        assert_eq!(b.append(b"n").unwrap(), RecordId(8));
    }
}

#[test]
fn unsend_from_hands_out_the_unsent_tail_again() {
    let d = TestDir::new("unsend");
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Never)).unwrap();
    for i in 0..5 {
        b.append(&payload(i, 10)).unwrap();
    }
    assert_eq!(ids(&b.next_unsent(4).unwrap()), [0, 1, 2, 3]);
    // Records 2 and 3 could not be sent: they come out again, followed by the rest.
    b.unsend_from(RecordId(2));
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [2, 3, 4]);
    b.unsend_from(RecordId(4));
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [4]);
    // It never moves the cursor forward: the earlier point wins.
    b.unsend_from(RecordId(1));
    b.unsend_from(RecordId(3));
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [1, 2, 3, 4]);
    b.ack(RecordId(0)).unwrap();
    b.unsend_from(RecordId(0));
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [1, 2, 3, 4], "acked records never come back");
}

mod model;
mod recovery;
