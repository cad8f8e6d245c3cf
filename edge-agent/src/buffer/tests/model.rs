//! The model-based property test: random appends, hand-outs, acks, rewinds, syncs and
//! crashes (with torn and corrupted files) against an in-memory model of what the buffer
//! must hold.

use super::*;

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
