//! Tests of the disk buffer: unit tests of the API and of recovery, and a model-based
//! property test that crashes the buffer and tears and corrupts its files at random.
//!
//! The tests read the files with their own parser (`walk`, `disk_watermark`) rather than
//! the buffer's, so a bug in the buffer's reader cannot hide itself.

use std::collections::{BTreeMap, BTreeSet};
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
fn torn_tail_is_cut_at_every_byte() {
    // Three 50-byte records; cut the file at every interesting byte.
    for cut in [0u64, 1, 15, 16, 17, 49, 50, 51, 66, 99, 100, 101, 149, 150] {
        let d = TestDir::new("torn");
        let cfg = || d.config(1 << 20, BIG, FsyncPolicy::Always);
        let mut b = DiskBuffer::open(cfg()).unwrap();
        for i in 0..3 {
            b.append(&payload(i, 34)).unwrap();
        }
        b.simulate_crash();
        truncate(&d.0.join(seg_name(0)), cut);

        let mut b = DiskBuffer::open(cfg()).unwrap();
        let survivors = cut / 50;
        let s = b.stats();
        assert_eq!(
            s,
            BufferStats {
                records: survivors,
                bytes: survivors * 50,
                truncated_bytes: cut % 50,
                ..BufferStats::default()
            },
            "cut {cut}"
        );
        assert_eq!(
            b.next_unsent(10).unwrap(),
            (0..survivors).map(|i| (RecordId(i), payload(i, 34))).collect::<Vec<_>>(),
            "cut {cut}"
        );
        // The record being written is gone; ids go on from the last intact one.
        assert_eq!(b.append(&payload(9, 5)).unwrap(), RecordId(survivors), "cut {cut}");
        b.simulate_crash();
        let segs = walk(&d.0);
        assert_eq!(segs.len(), 1);
        assert_eq!(
            segs[0].len,
            survivors * 50 + 21,
            "cut {cut}: the new record follows the cut directly"
        );
    }
}

#[test]
fn corrupt_record_is_skipped_and_recovery_continues_with_next_segment() {
    // Segments of two 50-byte records: seg-0 [0, 1], seg-2 [2, 3], seg-4 [4, 5].
    // (segment first id, offset of the flipped byte, xor mask, records expected back,
    //  corrupt records reported, bytes cut)
    type Case = (u64, u64, u8, &'static [u64], u64, u64);
    let cases: [Case; 6] = [
        (2, 16 + 5, 0x40, &[0, 1, 4, 5], 1, 100), // payload of record 2: the rest of seg-2 goes too
        (2, 50 + 4, 0x40, &[0, 1, 2, 4, 5], 1, 50), // crc field of record 3
        (2, 50 + 9, 0x40, &[0, 1, 2, 4, 5], 1, 50), // id field of record 3
        (0, 0, 0x02, &[2, 3, 4, 5], 1, 100),      // len of record 0 made shorter: bad crc
        (0, 0, 0x40, &[2, 3, 4, 5], 0, 100),      // len of record 0 made longer: reads as torn
        (4, 60, 0x40, &[0, 1, 2, 3, 4], 1, 50),   // last segment, record 5
    ];
    for (seg, pos, xor, back, corrupt, cut) in cases {
        let d = TestDir::new("corrupt");
        let cfg = || d.config(100, BIG, FsyncPolicy::Always);
        let mut b = DiskBuffer::open(cfg()).unwrap();
        for i in 0..6 {
            b.append(&payload(i, 34)).unwrap();
        }
        b.simulate_crash();
        flip_byte(&d.0.join(seg_name(seg)), pos, xor);

        let mut b = DiskBuffer::open(cfg()).unwrap();
        let s = b.stats();
        assert_eq!(
            (s.records, s.corrupt_skipped, s.truncated_bytes),
            (back.len() as u64, corrupt, cut),
            "flip in seg {seg} at {pos}"
        );
        assert_eq!(s.bytes, 300 - cut);
        let got = b.next_unsent(10).unwrap();
        assert_eq!(
            got,
            back.iter().map(|&i| (RecordId(i), payload(i, 34))).collect::<Vec<_>>(),
            "flip in seg {seg} at {pos}"
        );
        // The damage was cut off: the files are clean again.
        b.simulate_crash();
        let files: u64 = walk(&d.0).iter().map(|s| s.len).sum();
        assert_eq!(files, 300 - cut);
    }
}

#[test]
fn corruption_after_open_is_never_handed_out() {
    let d = TestDir::new("readback");
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    for i in 0..3 {
        b.append(&payload(i, 34)).unwrap();
    }
    flip_byte(&d.0.join(seg_name(0)), 50 + 16 + 3, 0x01);
    assert_eq!(
        b.next_unsent(10).unwrap(),
        vec![(RecordId(0), payload(0, 34)), (RecordId(2), payload(2, 34))]
    );
    assert_eq!((b.stats().records, b.stats().corrupt_skipped), (2, 1));
    b.rewind();
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [0, 2]);
}

#[test]
fn corrupt_ack_file_refuses_to_open() {
    let d = TestDir::new("badack");
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    b.append(b"a").unwrap();
    b.ack(RecordId(0)).unwrap();
    drop(b);
    assert_eq!(disk_watermark(&d.0), 1);

    flip_byte(&d.0.join("ack"), 0, 0x02);
    match DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)) {
        Err(BufferError::CorruptAck { path, reason: "checksum mismatch" }) => {
            assert_eq!(path, d.0.join("ack"))
        }
        other => panic!("expected CorruptAck, got {other:?}"),
    }
    fs::write(d.0.join("ack"), [1u8; 5]).unwrap();
    assert!(matches!(
        DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)),
        Err(BufferError::CorruptAck { reason: "wrong length", .. })
    ));
}

#[test]
fn interrupted_watermark_write_is_ignored() {
    let d = TestDir::new("acktmp");
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    for i in 0..3 {
        b.append(&payload(i, 4)).unwrap();
    }
    b.ack(RecordId(0)).unwrap();
    drop(b);
    // A crash between writing ack.tmp and the rename: the old ack file stands.
    fs::write(d.0.join("ack.tmp"), [0xff; 12]).unwrap();
    let mut b = DiskBuffer::open(d.config(1 << 20, BIG, FsyncPolicy::Always)).unwrap();
    assert!(!d.0.join("ack.tmp").exists());
    assert_eq!(ids(&b.next_unsent(10).unwrap()), [1, 2]);
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

// ---------------------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    HandOut(usize),
    /// Ack one of the ids handed out since open, chosen by index.
    Ack(Index),
    Rewind,
    Sync,
    /// Kill the process, cut the last segment at a byte chosen by `cut` (anywhere from its
    /// length down to 0), optionally flip a byte (segment, position, xor mask), reopen.
    Crash {
        cut: Index,
        flip: Option<(Index, Index, u8)>,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Append),
        3 => (0usize..8).prop_map(Op::HandOut),
        5 => any::<Index>().prop_map(Op::Ack),
        1 => Just(Op::Rewind),
        1 => Just(Op::Sync),
        1 => (any::<Index>(), proptest::option::of((any::<Index>(), any::<Index>(), 1u8..=255)))
            .prop_map(|(cut, flip)| Op::Crash { cut, flip }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Unacked,
    /// `persisted`: covered by a watermark the ack file held at some point.
    Acked {
        persisted: bool,
    },
    /// No longer on disk (cut or corrupted away, or acked and its segment deleted).
    Gone,
}

#[derive(Debug)]
struct MRec {
    payload: Vec<u8>,
    st: St,
}

/// What the buffer must hold, independent of how it does it.
struct Model {
    recs: BTreeMap<u64, MRec>,
    /// Ids below this were handed out in the current pass.
    cursor: u64,
    /// Ids handed out since open: the candidates for acks.
    handed: Vec<u64>,
    last_append: Option<u64>,
    /// Ids appended after an open must be at least this.
    id_floor: u64,
    /// The model's watermark after each ack that acked something, since open.
    wm_hist: Vec<u64>,
    /// The last watermark seen in the ack file.
    disk_wm: u64,
}

impl Model {
    fn unacked(&self) -> impl Iterator<Item = (u64, &MRec)> + '_ {
        self.recs.iter().filter(|(_, r)| r.st == St::Unacked).map(|(&id, r)| (id, r))
    }

    /// The buffer's watermark is exactly the smallest unacked id; with none, it is its next
    /// id, which is at least this.
    fn wm_low(&self) -> u64 {
        match self.unacked().next() {
            Some((id, _)) => id,
            None => self.last_append.map_or(self.id_floor, |id| id + 1),
        }
    }

    /// The buffer's watermark is at most this.
    fn wm_high(&self) -> u64 {
        self.unacked().next().map_or(u64::MAX, |(id, _)| id)
    }

    /// The held records, in hand-out order.
    fn expected_unsent(&self, from: u64, n: usize) -> Vec<(RecordId, Vec<u8>)> {
        self.recs
            .range(from..)
            .filter(|(_, r)| r.st == St::Unacked)
            .take(n)
            .map(|(&id, r)| (RecordId(id), r.payload.clone()))
            .collect()
    }

    /// Read the ack file and check the buffer persisted neither too little nor too much.
    fn observe_disk_watermark(&mut self, dir: &Path) -> u64 {
        let disk = disk_watermark(dir);
        assert!(
            disk >= self.disk_wm,
            "persisted watermark went back from {} to {disk}",
            self.disk_wm
        );
        assert!(
            disk <= self.wm_high(),
            "watermark {disk} persisted past unacked record {}",
            self.wm_high()
        );
        if self.wm_hist.len() >= PERSIST_EVERY_ACKS as usize {
            let due = self.wm_hist[self.wm_hist.len() - PERSIST_EVERY_ACKS as usize];
            assert!(
                disk >= due,
                "watermark {disk} not persisted for 64 acks (should be at least {due})"
            );
        }
        self.disk_wm = disk;
        for (_, r) in self.recs.range_mut(..disk) {
            if let St::Acked { .. } = r.st {
                r.st = St::Acked { persisted: true };
            }
        }
        disk
    }
}

/// Fields drop in order: the buffer (whose drop writes to the directory) before the directory.
struct Harness {
    buf: Option<DiskBuffer>,
    model: Model,
    cfg: BufferConfig,
    dir: TestDir,
}

impl Harness {
    fn new() -> Self {
        let dir = TestDir::new("model");
        // Small segments so that crashes hit segment boundaries and deletions; no drops.
        let cfg = dir.config(512, BIG, FsyncPolicy::Never);
        let buf = Some(DiskBuffer::open(cfg.clone()).unwrap());
        let model = Model {
            recs: BTreeMap::new(),
            cursor: 0,
            handed: Vec::new(),
            last_append: None,
            id_floor: 0,
            wm_hist: Vec::new(),
            disk_wm: 0,
        };
        Harness { buf, model, cfg, dir }
    }

    fn buf(&mut self) -> &mut DiskBuffer {
        self.buf.as_mut().unwrap()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(p) => {
                let id = self.buf().append(p).unwrap().0;
                let m = &mut self.model;
                match m.last_append {
                    Some(last) => assert_eq!(id, last + 1, "ids within a session are consecutive"),
                    None => {
                        assert!(id >= m.id_floor, "id {id} after recovery is below {}", m.id_floor)
                    }
                }
                if let Some(old) = m.recs.get(&id) {
                    assert_eq!(
                        old.st,
                        St::Gone,
                        "id {id} reused while its record is still on disk"
                    );
                }
                m.recs.insert(id, MRec { payload: p.clone(), st: St::Unacked });
                m.last_append = Some(id);
            }
            Op::HandOut(n) => {
                let got = self.buf().next_unsent(*n).unwrap();
                let m = &mut self.model;
                // (d) increasing within the pass.
                let got_ids = ids(&got);
                assert!(got_ids.windows(2).all(|w| w[0] < w[1]), "hand-out order {got_ids:?}");
                assert!(
                    got_ids.first().is_none_or(|&id| id >= m.cursor),
                    "{got_ids:?} handed out twice in a pass"
                );
                // (a) nothing acked is handed out, (b) nothing held is skipped, (c) bytes exact.
                for id in &got_ids {
                    let st = m.recs.get(id).map(|r| r.st);
                    assert_eq!(st, Some(St::Unacked), "handed out {id}");
                }
                assert_eq!(got, m.expected_unsent(m.cursor, *n));
                if let Some(&last) = got_ids.last() {
                    m.cursor = last + 1;
                }
                m.handed.extend(got_ids);
            }
            Op::Ack(i) => {
                if self.model.handed.is_empty() {
                    return;
                }
                let id = self.model.handed[i.index(self.model.handed.len())];
                self.buf().ack(RecordId(id)).unwrap();
                let m = &mut self.model;
                let Some(r) = m.recs.get_mut(&id) else { panic!("acked unknown {id}") };
                if r.st == St::Unacked {
                    r.st = St::Acked { persisted: false };
                    let wm = m.wm_low();
                    m.wm_hist.push(wm);
                }
            }
            Op::Rewind => {
                self.buf().rewind();
                self.model.cursor = 0;
            }
            Op::Sync => {
                self.buf().sync().unwrap();
                let disk = disk_watermark(&self.dir.0);
                match self.model.unacked().next() {
                    Some((id, _)) => assert_eq!(disk, id, "sync persists the exact watermark"),
                    None => assert!(
                        disk >= self.model.wm_low(),
                        "sync persisted {disk}, below {}",
                        self.model.wm_low()
                    ),
                }
            }
            Op::Crash { cut, flip } => self.crash(cut, flip.as_ref()),
        }
        self.check();
    }

    fn crash(&mut self, cut: &Index, flip: Option<&(Index, Index, u8)>) {
        if let Some(b) = self.buf.take() {
            b.simulate_crash();
        }
        let dir = self.dir.0.clone();
        let disk_wm = self.model.observe_disk_watermark(&dir);

        // What is on disk now (clean files), checked against the model (c).
        let segs = walk(&dir);
        let mut present = BTreeSet::new();
        for s in &segs {
            for r in &s.records {
                let m = self
                    .model
                    .recs
                    .get(&r.id)
                    .unwrap_or_else(|| panic!("record {} on disk unknown to the model", r.id));
                assert_ne!(m.st, St::Gone, "record {} came back from the dead", r.id);
                assert_eq!(
                    r.payload, m.payload,
                    "record {} on disk differs from what was appended",
                    r.id
                );
                present.insert(r.id);
            }
        }
        // (b) nothing unacked has gone missing before the crash damage.
        for (id, _) in self.model.unacked() {
            assert!(present.contains(&id), "unacked record {id} is not on disk");
        }

        // Damage: new length of each file, records lost, corrupt records expected.
        let mut tampered_len: Vec<u64> = segs.iter().map(|s| s.len).collect();
        let mut lost = BTreeSet::new();
        // Per file, the first byte the buffer must cut at.
        let mut cut_at: Vec<u64> = tampered_len.clone();
        if let Some(last) = segs.len().checked_sub(1) {
            let at = cut.index(segs[last].len as usize + 1) as u64;
            truncate(&segs[last].path, at);
            tampered_len[last] = at;
            for r in segs[last].records.iter().filter(|r| r.offset + r.total > at) {
                lost.insert(r.id);
                cut_at[last] = cut_at[last].min(r.offset);
            }
        }
        // (min, max) corrupt records the open must report.
        let mut corrupt = (0, 0);
        let candidates: Vec<usize> = (0..segs.len()).filter(|&i| tampered_len[i] > 0).collect();
        if let (Some((file, pos, xor)), false) = (flip, candidates.is_empty()) {
            let f = candidates[file.index(candidates.len())];
            let pos = pos.index(tampered_len[f] as usize) as u64;
            flip_byte(&segs[f].path, pos, *xor);
            for r in segs[f].records.iter().filter(|r| r.offset + r.total > pos) {
                lost.insert(r.id);
                cut_at[f] = cut_at[f].min(r.offset);
            }
            let Some(hit) =
                segs[f].records.iter().find(|r| r.offset <= pos && pos < r.offset + r.total)
            else {
                panic!("flip at {pos} outside every record")
            };
            if pos - hit.offset < 4 {
                // A damaged len reads as a torn record or as a checksum failure.
                corrupt = (0, 1);
            } else if hit.offset + hit.total <= tampered_len[f] {
                corrupt = (1, 1);
            }
        }
        let truncated: u64 = tampered_len.iter().zip(&cut_at).map(|(len, at)| len - at).sum();

        self.buf = Some(DiskBuffer::open(self.cfg.clone()).unwrap());

        // The model's view of the reopened buffer.
        let survivors: BTreeSet<u64> = present.difference(&lost).copied().collect();
        let m = &mut self.model;
        for (&id, r) in m.recs.iter_mut() {
            let on_disk = survivors.contains(&id);
            r.st = match r.st {
                St::Unacked if on_disk => St::Unacked,
                St::Acked { persisted } if on_disk && id >= disk_wm => {
                    // (a) an ack the ack file covered must never be undone.
                    assert!(!persisted, "record {id} acked and persisted came back");
                    St::Unacked
                }
                St::Acked { .. } if on_disk => St::Acked { persisted: true },
                _ => St::Gone,
            };
        }
        m.id_floor = survivors.last().map_or(0, |id| id + 1).max(disk_wm);
        m.cursor = 0;
        m.handed.clear();
        m.last_append = None;
        m.wm_hist.clear();

        let s = self.buf().stats();
        assert!(
            (corrupt.0..=corrupt.1).contains(&s.corrupt_skipped),
            "corrupt_skipped {} not in {corrupt:?}",
            s.corrupt_skipped
        );
        assert_eq!(s.truncated_bytes, truncated, "bytes cut at open");
        // Everything held comes back in order and byte-identical; then start the pass over.
        let all = self.buf().next_unsent(usize::MAX).unwrap();
        assert_eq!(all, self.model.expected_unsent(0, usize::MAX), "records after recovery");
        self.buf().rewind();
        // The damage is gone from the files, and nothing lost was resurrected.
        for s in walk(&dir) {
            for r in s.records {
                assert!(survivors.contains(&r.id), "record {} back on disk after recovery", r.id);
            }
        }
    }

    /// Checked after every step.
    fn check(&mut self) {
        let dir = self.dir.0.clone();
        self.model.observe_disk_watermark(&dir);
        let s = self.buf().stats();
        assert_eq!(s.records, self.model.unacked().count() as u64, "records held");
        assert_eq!(s.dropped, 0);
        let on_disk: u64 =
            seg_files(&dir).iter().map(|n| fs::metadata(dir.join(n)).unwrap().len()).sum();
        assert_eq!(s.bytes, on_disk, "stats.bytes vs the files");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random appends, hand-outs, acks, rewinds, syncs and crashes (with torn and corrupted
    /// files) against an in-memory model of what the buffer must hold.
    #[test]
    fn model_based_crash_recovery(ops in proptest::collection::vec(op_strategy(), 1..80)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        // A clean close persists the exact watermark; what is on disk at or above it (the
        // unacked records, and acked ones above the watermark) is what comes back.
        h.buf.take();
        let disk = disk_watermark(&h.dir.0);
        if let Some((id, _)) = h.model.unacked().next() {
            prop_assert_eq!(disk, id);
        }
        let mut expected = Vec::new();
        for s in walk(&h.dir.0) {
            for r in s.records.into_iter().filter(|r| r.id >= disk) {
                prop_assert!(h.model.recs.get(&r.id).is_some_and(|m| m.st != St::Gone && m.payload == r.payload));
                expected.push((RecordId(r.id), r.payload));
            }
        }
        for (id, _) in h.model.unacked() {
            prop_assert!(expected.iter().any(|(e, _)| e.0 == id), "unacked {} lost at clean close", id);
        }
        let mut b = DiskBuffer::open(h.cfg.clone()).unwrap();
        prop_assert_eq!(b.next_unsent(usize::MAX).unwrap(), expected);
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
