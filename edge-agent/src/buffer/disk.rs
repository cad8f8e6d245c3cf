//! The buffer's files: the record header and CRC, segment names, scanning a segment at
//! open (clean, torn or corrupt), reading a record back, and the watermark file replaced
//! atomically. The format itself is described in the parent module.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{BufferError, Loc};

/// `len` + `crc` + `id`.
pub(super) const HEADER_LEN: u64 = 16;
pub(super) const ACK_FILE: &str = "ack";
pub(super) const ACK_TMP_FILE: &str = "ack.tmp";
/// `watermark: u64` + `crc: u32`.
pub(super) const ACK_FILE_LEN: usize = 12;

/// How the scan of one segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ScanEnd {
    Clean,
    /// The last record runs past the end of the file.
    Torn,
    /// A complete record whose CRC (or id order) is wrong.
    Corrupt,
}

pub(super) struct ScannedRecord {
    pub(super) id: u64,
    pub(super) offset: u64,
    pub(super) len: u32,
}

pub(super) struct Scan {
    pub(super) records: Vec<ScannedRecord>,
    /// Bytes up to the end of the last good record.
    pub(super) valid_len: u64,
    pub(super) file_len: u64,
    pub(super) end: ScanEnd,
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io { path: path.to_path_buf(), source }
}

pub(super) fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("seg-{first_id:020}.log"))
}

pub(super) fn record_crc(id: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// (len, crc, id)
pub(super) fn decode_header(h: &[u8; HEADER_LEN as usize]) -> (u32, u32, u64) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let id = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    (len, crc, id)
}

/// Segment first ids in the directory, ascending. Other files are not ours and are left alone.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, BufferError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some(digits) =
            name.to_str().and_then(|n| n.strip_prefix("seg-")).and_then(|n| n.strip_suffix(".log"))
        else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(id) = digits.parse::<u64>() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Read a segment up to its end or its first damaged record. `next_first` is the next
/// segment's first id, an upper bound for ids in this one.
pub(super) fn scan_segment(
    path: &Path,
    first_id: u64,
    next_first: Option<u64>,
) -> Result<Scan, BufferError> {
    let file = File::open(path).map_err(io_at(path))?;
    let file_len = file.metadata().map_err(io_at(path))?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut records = Vec::new();
    let mut payload = Vec::new();
    let mut offset = 0u64;
    let mut prev: Option<u64> = None;
    let end = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break ScanEnd::Clean;
        }
        if remaining < HEADER_LEN {
            break ScanEnd::Torn;
        }
        let mut header = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut header).map_err(|source| BufferError::RecordIo {
            path: path.to_path_buf(),
            offset,
            source,
        })?;
        let (len, crc, id) = decode_header(&header);
        // Checked before allocating: a damaged len must not make us allocate gigabytes.
        if u64::from(len) > remaining - HEADER_LEN {
            break ScanEnd::Torn;
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).map_err(|source| BufferError::RecordIo {
            path: path.to_path_buf(),
            offset,
            source,
        })?;
        if record_crc(id, &payload) != crc {
            break ScanEnd::Corrupt;
        }
        // A valid CRC on an id out of place means the file was tampered with (or a CRC
        // collision on garbage); either way it is not a record we wrote there.
        let in_place =
            id >= first_id && prev.is_none_or(|p| id > p) && next_first.is_none_or(|n| id < n);
        if !in_place {
            break ScanEnd::Corrupt;
        }
        records.push(ScannedRecord { id, offset, len });
        prev = Some(id);
        offset += HEADER_LEN + u64::from(len);
    };
    Ok(Scan { records, valid_len: offset, file_len, end })
}

/// Read one held record back, verifying it. `Ok(None)` when it no longer checks out.
pub(super) fn read_record(
    file: &mut File,
    path: &Path,
    id: u64,
    loc: Loc,
) -> Result<Option<Vec<u8>>, BufferError> {
    let at =
        |source| BufferError::RecordIo { path: path.to_path_buf(), offset: loc.offset, source };
    file.seek(SeekFrom::Start(loc.offset)).map_err(at)?;
    let mut header = [0u8; HEADER_LEN as usize];
    let mut payload = vec![0u8; loc.len as usize];
    let read = file.read_exact(&mut header).and_then(|()| file.read_exact(&mut payload));
    match read {
        Ok(()) => {}
        // Shorter than when it was indexed: damaged under us, not an I/O failure.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(at(e)),
    }
    let (len, crc, stored_id) = decode_header(&header);
    if len != loc.len || stored_id != id || record_crc(id, &payload) != crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

/// The persisted watermark; 0 (nothing acked) when there is no watermark file yet.
pub(super) fn read_watermark(dir: &Path) -> Result<u64, BufferError> {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(BufferError::Io { path, source }),
    };
    let Ok(bytes) = <[u8; ACK_FILE_LEN]>::try_from(bytes.as_slice()) else {
        return Err(BufferError::CorruptAck { path, reason: "wrong length" });
    };
    let watermark = u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc32fast::hash(&watermark.to_le_bytes()) != crc {
        return Err(BufferError::CorruptAck { path, reason: "checksum mismatch" });
    }
    Ok(watermark)
}

/// Replace the watermark file atomically: a crash leaves either the old or the new one.
pub(super) fn write_watermark(dir: &Path, watermark: u64) -> Result<(), BufferError> {
    let tmp = dir.join(ACK_TMP_FILE);
    let path = dir.join(ACK_FILE);
    let mut bytes = [0u8; ACK_FILE_LEN];
    bytes[..8].copy_from_slice(&watermark.to_le_bytes());
    bytes[8..].copy_from_slice(&crc32fast::hash(&watermark.to_le_bytes()).to_le_bytes());
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(&bytes).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)
}

/// Make renames, creations and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
    }
    // Elsewhere directories cannot be opened for fsync; the rename is the best we can do.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
