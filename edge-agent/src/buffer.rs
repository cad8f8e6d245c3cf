//! The edge agent's crash-safe store-and-forward buffer.
//!
//! (About 600 lines, a sixth of them the on-disk format and the crash guarantees below:
//! the buffer's logic stays in one file so that the format and the code that keeps it are
//! read together; the segment files' I/O is in `buffer/disk.rs`, the tests in
//! `buffer/tests/`.)
//!
//! A field device on a bad link must never lose a reading: every message is appended to an
//! on-disk, append-only log *before* it is published, and is removed only after the broker's
//! PUBACK for the packet that carried it ([`DiskBuffer::ack`]).
//!
//! # On-disk format
//!
//! The buffer directory holds segment files and one watermark file:
//!
//! - `seg-{first_id:020}.log`: a segment; `first_id` is the id the segment was started at
//!   (every record in it has an id `>= first_id` and below the next segment's `first_id`).
//!   Segments are read in `first_id` order. A segment is a plain sequence of records:
//!
//!   ```text
//!   len: u32 LE | crc: u32 LE | id: u64 LE | payload (len bytes)
//!   ```
//!
//!   `crc` is the CRC-32 (IEEE) of the 8 id bytes followed by the payload, so a record whose
//!   id or payload was damaged is detected as well as one whose payload was.
//! - `ack`: the ack watermark, `watermark: u64 LE | crc32(watermark bytes): u32 LE`. Every id
//!   below the watermark is acknowledged (or otherwise gone: dropped because the buffer was
//!   full, or lost to corruption). It is replaced atomically: write `ack.tmp`, fsync it,
//!   rename it over `ack`, fsync the directory. A leftover `ack.tmp` is an interrupted
//!   replacement and is deleted at open; the old `ack` is still valid then.
//!
//! # Acknowledgements
//!
//! Acks may arrive out of order. The in-memory index holds only unacked records, so the
//! watermark is simply its smallest id (or the next id when it is empty): acked ids above the
//! watermark are implicit in the gaps of the index. The watermark is persisted before any
//! segment file is deleted, after every 64 acks and on [`DiskBuffer::sync`] (and on drop).
//! A record acked after the last persisted watermark comes back once after a crash; delivery
//! is at-least-once and the server deduplicates. Out-of-order acks above the watermark are
//! not persisted by the watermark, so they too come back after a restart unless their whole
//! segment was deleted.
//!
//! Disk space is reclaimed per segment: a sealed segment (one that is no longer appended
//! to) is deleted as soon as none of its records is held. The segment being appended to is
//! kept until it fills up and is sealed, so that an empty buffer does not create, fsync and
//! delete a file for every message.
//!
//! When an append would take the files past `max_bytes`, whole segments are dropped,
//! oldest first, until the record fits (space only comes back a file at a time); their
//! unacked records are counted in [`BufferStats::dropped`] and count as gone for the
//! watermark.
//!
//! # Crash guarantees
//!
//! - A record whose `append` returned `Ok` with [`FsyncPolicy::Always`] survives a crash of
//!   the process or of the host. With `EveryN`/`Never` it survives a crash of the process
//!   (the data is in the page cache) but up to the unsynced appends may be lost with the
//!   host.
//! - A torn write (the file cut at any byte, e.g. power loss in the middle of an append)
//!   loses at most the records from the cut on and never yields a partial or corrupt
//!   record: at open a record whose header or payload runs past the end of its segment is a
//!   torn tail and is cut off ([`BufferStats::truncated_bytes`]).
//! - A record whose CRC does not match is never handed out. Within a segment, recovery
//!   **stops at the first corrupt record**: once a record is known to be damaged its `len`
//!   cannot be trusted either, and guessing at the next record boundary could surface
//!   garbage that happens to look like a record. The corrupt record and the rest of that
//!   segment are cut off (counted as one record in [`BufferStats::corrupt_skipped`], their
//!   bytes in `truncated_bytes`) and recovery **continues with the next segment**. Cutting
//!   matters for the last segment, which is appended to again: new records must not sit
//!   behind bytes the next open would stop at. Records are CRC-checked again when read back
//!   for [`DiskBuffer::next_unsent`]; one damaged since open is skipped and counted too.
//! - A record acked and covered by a persisted watermark never comes back.
//! - Ids keep increasing after recovery: the next id is the largest of the highest id found
//!   plus one, the persisted watermark, and the `first_id` of the last segment file (which
//!   survives even when the whole segment was cut). An id is reused only if its record was
//!   lost with the torn tail; with `Always` that record's append never returned, with the
//!   other policies it may have been published, which is harmless as the server
//!   deduplicates on the reading (device, metric, time), not on the buffer's id.
//!
//! The file format (records, the watermark file, scanning and reading segments) is in
//! `disk`; the buffer's bookkeeping is here.

mod disk;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use disk::{
    io_at, list_segments, read_record, read_watermark, record_crc, scan_segment, segment_path,
    sync_dir, write_watermark, ScanEnd, ACK_TMP_FILE, HEADER_LEN,
};

/// Persist the watermark at least this often, so a crash re-sends a bounded number of
/// acked records.
const PERSIST_EVERY_ACKS: u32 = 64;

/// When appends are made durable with fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every append: an appended record survives a host crash.
    Always,
    /// Never fsync appends; leave write-back to the OS.
    Never,
    /// fsync every N appends (`EveryN(0)` behaves like `EveryN(1)`).
    EveryN(u32),
}

#[derive(Debug, Clone)]
pub struct BufferConfig {
    pub dir: PathBuf,
    /// Total bytes on disk (all segment files) the buffer may hold; when an append would
    /// exceed it, the OLDEST records are dropped (counted in stats.dropped) until it fits. A
    /// single record larger than max_bytes is refused with an error.
    pub max_bytes: u64,
    /// A new segment file is started when the current one reaches this size.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("edge-buffer"),
            max_bytes: 64 << 20,
            segment_bytes: 4 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// Identifies a buffered record; strictly increasing across the buffer's whole life, also
/// across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub u64);

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Records held: appended and not yet acknowledged.
    pub records: u64,
    /// Bytes of all segment files on disk.
    pub bytes: u64,
    /// Unacked records dropped (oldest first) because the buffer was full, since open.
    pub dropped: u64,
    /// Corrupt records found since open (at open, or when read back to be handed out).
    pub corrupt_skipped: u64,
    /// Bytes cut from segment files at open: torn tails, and everything from a corrupt
    /// record to the end of its segment.
    pub truncated_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer I/O error on {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("buffer I/O error on {} at offset {offset}: {source}", .path.display())]
    RecordIo { path: PathBuf, offset: u64, source: io::Error },
    #[error(
        "a record of {size} bytes (header included) exceeds the buffer limit of {limit} bytes"
    )]
    TooLarge { size: u64, limit: u64 },
    /// The watermark file is damaged. Opening refuses rather than guessing: a watermark too
    /// low re-sends acked records, one too high silently drops unacked ones.
    #[error("ack watermark file {} is corrupt: {reason}", .path.display())]
    CorruptAck { path: PathBuf, reason: &'static str },
    #[error("ack for record {id}, which was never appended (the next id is {next})")]
    UnknownRecord { id: RecordId, next: RecordId },
}

/// Where a held record lives.
#[derive(Debug, Clone, Copy)]
struct Loc {
    /// `first_id` of the segment.
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    size: u64,
    /// Records of this segment still in the index (unacked).
    held: u64,
}

/// The segment appends go to; always the last one.
#[derive(Debug)]
struct Active {
    first_id: u64,
    file: File,
}

pub struct DiskBuffer {
    config: BufferConfig,
    /// Every segment file on disk, by `first_id`.
    segments: BTreeMap<u64, Segment>,
    /// Held (unacked) records: id → location. Payloads stay on disk.
    index: BTreeMap<u64, Loc>,
    active: Option<Active>,
    next_id: u64,
    /// Records with ids below this were handed out in the current pass.
    cursor: u64,
    persisted_watermark: u64,
    acks_since_persist: u32,
    /// Appends to the active segment since its last fsync.
    unsynced_appends: u32,
    total_bytes: u64,
    dropped: u64,
    corrupt_skipped: u64,
    truncated_bytes: u64,
    /// Cleared only by tests that simulate a crash (no final sync).
    persist_on_drop: bool,
}

impl fmt::Debug for DiskBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskBuffer")
            .field("dir", &self.config.dir)
            .field("next_id", &self.next_id)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DiskBuffer {
    /// Open (creating the dir if needed) and recover: scan all segments in order, verify each
    /// record's CRC, cut a torn tail of the last segment, skip (and count) corrupt records,
    /// restore the ack watermark.
    pub fn open(config: BufferConfig) -> Result<Self, BufferError> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let tmp = dir.join(ACK_TMP_FILE);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(BufferError::Io { path: tmp, source: e })
            }
            _ => {}
        }
        let persisted_watermark = read_watermark(&dir)?;
        let first_ids = list_segments(&dir)?;

        let mut me = Self {
            config,
            segments: BTreeMap::new(),
            index: BTreeMap::new(),
            active: None,
            next_id: persisted_watermark,
            cursor: 0,
            persisted_watermark,
            acks_since_persist: 0,
            unsynced_appends: 0,
            total_bytes: 0,
            dropped: 0,
            corrupt_skipped: 0,
            truncated_bytes: 0,
            persist_on_drop: true,
        };

        for (i, &first_id) in first_ids.iter().enumerate() {
            let path = segment_path(&dir, first_id);
            let scan = scan_segment(&path, first_id, first_ids.get(i + 1).copied())?;
            if scan.valid_len < scan.file_len {
                let cut = scan.file_len - scan.valid_len;
                tracing::warn!(
                    segment = %path.display(),
                    offset = scan.valid_len,
                    bytes = cut,
                    reason = ?scan.end,
                    "buffer segment damaged; cutting it at the last intact record"
                );
                if scan.end == ScanEnd::Corrupt {
                    me.corrupt_skipped += 1;
                }
                me.truncated_bytes += cut;
                // Durable before anything is appended behind the cut, or a later open could
                // stop at the old damage again and miss the new records.
                let file = OpenOptions::new().write(true).open(&path).map_err(io_at(&path))?;
                file.set_len(scan.valid_len).map_err(io_at(&path))?;
                file.sync_all().map_err(io_at(&path))?;
            }
            // The segment's name proves its first id was handed out, even if every record
            // of it was cut.
            me.next_id = me.next_id.max(first_id);
            let mut held = 0;
            for r in &scan.records {
                me.next_id = me.next_id.max(r.id.saturating_add(1));
                if r.id >= persisted_watermark {
                    me.index.insert(r.id, Loc { segment: first_id, offset: r.offset, len: r.len });
                    held += 1;
                }
            }
            me.segments.insert(first_id, Segment { size: scan.valid_len, held });
            me.total_bytes += scan.valid_len;
        }

        // Sealed segments with nothing held are fully acked (or their records were lost).
        let last = me.segments.keys().next_back().copied();
        let empty: Vec<u64> = me
            .segments
            .iter()
            .filter(|&(&id, s)| s.held == 0 && Some(id) != last)
            .map(|(&id, _)| id)
            .collect();
        for first_id in empty {
            me.delete_segment(first_id)?;
        }
        if let Some(first_id) = last {
            let path = segment_path(&dir, first_id);
            let file = OpenOptions::new().append(true).open(&path).map_err(io_at(&path))?;
            me.active = Some(Active { first_id, file });
        }
        tracing::debug!(dir = %dir.display(), records = me.index.len(), next_id = me.next_id, "buffer opened");
        Ok(me)
    }

    /// Durably (per the fsync policy) append one payload; returns its id.
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordId, BufferError> {
        let size = HEADER_LEN.saturating_add(payload.len() as u64);
        let limit = self.config.max_bytes.min(HEADER_LEN + u64::from(u32::MAX));
        let too_large = BufferError::TooLarge { size, limit };
        if size > limit {
            return Err(too_large);
        }
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(too_large);
        };

        if let Some(active) = &self.active {
            let full = self
                .segments
                .get(&active.first_id)
                .is_some_and(|s| s.size >= self.config.segment_bytes);
            if full {
                self.seal_active()?;
            }
        }
        while self.total_bytes + size > self.config.max_bytes {
            let Some(&oldest) = self.segments.keys().next() else { break };
            self.drop_segment(oldest)?;
        }
        if self.active.is_none() {
            self.start_segment()?;
        }

        let id = self.next_id;
        // Consumed even if the write fails: a failed write may have left a complete record
        // with this id on disk, and no two records may share an id.
        self.next_id += 1;
        let mut record = Vec::with_capacity(HEADER_LEN as usize + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&record_crc(id, payload).to_le_bytes());
        record.extend_from_slice(&id.to_le_bytes());
        record.extend_from_slice(payload);

        let Some(active) = self.active.as_mut() else {
            // start_segment() either set it or returned an error.
            return Err(BufferError::Io {
                path: self.config.dir.clone(),
                source: io::Error::other("no active segment"),
            });
        };
        let first_id = active.first_id;
        let seg = self.segments.entry(first_id).or_insert(Segment { size: 0, held: 0 });
        let offset = seg.size;
        self.unsynced_appends += 1;
        let fsync_due = match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryN(n) => self.unsynced_appends >= n.max(1),
        };
        let written = active.file.write_all(&record).and_then(|()| {
            if fsync_due {
                active.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(source) = written {
            // Take the partial record back out so later appends do not sit behind it, and
            // seal the file either way: after a failed write or fsync its state is unknown
            // (a failed fsync may have dropped dirty pages), so new records go to a fresh one.
            if active.file.set_len(offset).is_err() {
                seg.size += record.len() as u64;
                self.total_bytes += record.len() as u64;
            }
            self.active = None;
            self.unsynced_appends = 0;
            return Err(BufferError::RecordIo {
                path: segment_path(&self.config.dir, first_id),
                offset,
                source,
            });
        }
        if fsync_due {
            self.unsynced_appends = 0;
        }
        seg.size += record.len() as u64;
        seg.held += 1;
        self.total_bytes += record.len() as u64;
        self.index.insert(id, Loc { segment: first_id, offset, len });
        Ok(RecordId(id))
    }

    /// Up to `max` records not yet handed out since open/rewind, oldest first. Handing out
    /// does not remove.
    pub fn next_unsent(&mut self, max: usize) -> Result<Vec<(RecordId, Vec<u8>)>, BufferError> {
        let mut out = Vec::new();
        // One open file per segment touched, reused while consecutive records share it.
        let mut reader: Option<(u64, File)> = None;
        while out.len() < max {
            let Some((&id, &loc)) = self.index.range(self.cursor..).next() else { break };
            let path = segment_path(&self.config.dir, loc.segment);
            let file = match reader.take() {
                Some((segment, file)) if segment == loc.segment => {
                    &mut reader.insert((segment, file)).1
                }
                _ => &mut reader.insert((loc.segment, File::open(&path).map_err(io_at(&path))?)).1,
            };
            match read_record(file, &path, id, loc)? {
                Some(payload) => out.push((RecordId(id), payload)),
                None => {
                    tracing::error!(segment = %path.display(), offset = loc.offset, id, "buffer record corrupt on read-back; skipping it");
                    self.corrupt_skipped += 1;
                    self.forget(id, loc)?;
                }
            }
            self.cursor = id + 1;
        }
        Ok(out)
    }

    /// The broker acknowledged this record: it will not be handed out again, also not after
    /// a restart once the watermark covering it is persisted, and a sealed segment is deleted
    /// when none of its records is held any more.
    ///
    /// Acking a record that is already acked, was dropped, or was lost is a no-op. On `Err`
    /// the ack is still recorded in memory; only persisting it failed.
    pub fn ack(&mut self, id: RecordId) -> Result<(), BufferError> {
        if id.0 >= self.next_id {
            return Err(BufferError::UnknownRecord { id, next: RecordId(self.next_id) });
        }
        let Some(loc) = self.index.get(&id.0).copied() else { return Ok(()) };
        self.acks_since_persist += 1;
        let segment_deleted = self.forget(id.0, loc)?;
        if !segment_deleted && self.acks_since_persist >= PERSIST_EVERY_ACKS {
            self.persist_watermark()?;
        }
        Ok(())
    }

    /// Connection lost: every unacked record becomes unsent again (will be handed out again
    /// in order).
    /// Hand out `id` and the records after it again (they were handed out but could not be
    /// sent, e.g. because the client's request queue was full).
    pub fn unsend_from(&mut self, id: RecordId) {
        self.cursor = self.cursor.min(id.0);
    }

    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            records: self.index.len() as u64,
            bytes: self.total_bytes,
            dropped: self.dropped,
            corrupt_skipped: self.corrupt_skipped,
            truncated_bytes: self.truncated_bytes,
        }
    }

    /// Persist the ack watermark now, and fsync appends the fsync policy has not synced yet
    /// (so a clean shutdown is durable whatever the policy).
    pub fn sync(&mut self) -> Result<(), BufferError> {
        if self.unsynced_appends > 0 {
            if let Some(active) = &self.active {
                let path = segment_path(&self.config.dir, active.first_id);
                active.file.sync_data().map_err(io_at(&path))?;
            }
            self.unsynced_appends = 0;
        }
        self.persist_watermark()
    }

    /// All ids below this are acked or gone.
    fn watermark(&self) -> u64 {
        self.index.keys().next().copied().unwrap_or(self.next_id)
    }

    fn persist_watermark(&mut self) -> Result<(), BufferError> {
        let watermark = self.watermark();
        // Unchanged means already durable; skipping saves flash wear on idle acks.
        if watermark != self.persisted_watermark {
            write_watermark(&self.config.dir, watermark)?;
            self.persisted_watermark = watermark;
        }
        self.acks_since_persist = 0;
        Ok(())
    }

    /// Remove a held record from the index; deletes its segment if that was the last held
    /// record of a sealed segment. Returns whether a segment was deleted.
    fn forget(&mut self, id: u64, loc: Loc) -> Result<bool, BufferError> {
        self.index.remove(&id);
        let Some(seg) = self.segments.get_mut(&loc.segment) else { return Ok(false) };
        seg.held = seg.held.saturating_sub(1);
        let sealed = self.active.as_ref().is_none_or(|a| a.first_id != loc.segment);
        if seg.held == 0 && sealed {
            self.delete_segment(loc.segment)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Stop appending to the active segment; delete it if nothing in it is held.
    fn seal_active(&mut self) -> Result<(), BufferError> {
        let Some(active) = self.active.take() else { return Ok(()) };
        if self.unsynced_appends > 0 && self.config.fsync != FsyncPolicy::Never {
            // The policy's pending fsync belongs to this file; do it before moving on.
            let path = segment_path(&self.config.dir, active.first_id);
            active.file.sync_data().map_err(io_at(&path))?;
        }
        self.unsynced_appends = 0;
        if self.segments.get(&active.first_id).is_some_and(|s| s.held == 0) {
            self.delete_segment(active.first_id)?;
        }
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), BufferError> {
        let first_id = self.next_id;
        let path = segment_path(&self.config.dir, first_id);
        let file =
            OpenOptions::new().append(true).create_new(true).open(&path).map_err(io_at(&path))?;
        if self.config.fsync != FsyncPolicy::Never {
            // A record fsynced into a file whose directory entry is lost would be lost too.
            sync_dir(&self.config.dir)?;
        }
        self.segments.insert(first_id, Segment { size: 0, held: 0 });
        self.active = Some(Active { first_id, file });
        self.unsynced_appends = 0;
        Ok(())
    }

    /// The buffer is full: drop a whole segment, counting its unacked records.
    fn drop_segment(&mut self, first_id: u64) -> Result<(), BufferError> {
        // A segment's records have ids from its first id up to the next segment's.
        let upper = self
            .segments
            .range(first_id.saturating_add(1)..)
            .next()
            .map_or(u64::MAX, |(&id, _)| id);
        let ids: Vec<u64> = self.index.range(first_id..upper).map(|(&id, _)| id).collect();
        for id in &ids {
            self.index.remove(id);
        }
        if !ids.is_empty() {
            tracing::warn!(
                segment = first_id,
                records = ids.len(),
                "buffer full; dropping the oldest records"
            );
        }
        self.dropped += ids.len() as u64;
        if self.active.as_ref().is_some_and(|a| a.first_id == first_id) {
            self.active = None;
            self.unsynced_appends = 0;
        }
        if let Some(seg) = self.segments.get_mut(&first_id) {
            seg.held = 0;
        }
        self.delete_segment(first_id)
    }

    /// Delete a segment file. The watermark is persisted first: were the file gone and the
    /// old watermark still on disk, a crash could lose the evidence of the ids it used.
    fn delete_segment(&mut self, first_id: u64) -> Result<(), BufferError> {
        self.persist_watermark()?;
        let path = segment_path(&self.config.dir, first_id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(BufferError::Io { path, source: e })
            }
            _ => {}
        }
        if let Some(seg) = self.segments.remove(&first_id) {
            self.total_bytes = self.total_bytes.saturating_sub(seg.size);
        }
        Ok(())
    }

    /// Test hook: drop without the final sync, as a killed process would.
    #[cfg(test)]
    fn simulate_crash(mut self) {
        self.persist_on_drop = false;
    }
}

impl Drop for DiskBuffer {
    fn drop(&mut self) {
        // A clean shutdown should not re-send what was acked; errors can only be logged here.
        if self.persist_on_drop {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, "buffer: final sync failed; acked records may be re-sent");
            }
        }
    }
}

#[cfg(test)]
mod tests;
