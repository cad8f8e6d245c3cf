//! Recovery from damaged files: torn tails cut at every byte, corrupt records skipped
//! with recovery going on in the next segment, damage after open, a corrupt or half
//! written watermark file.

use super::*;

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
