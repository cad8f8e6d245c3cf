//! PostgreSQL's binary `COPY` format, written by hand for the two row shapes the writer
//! copies (readings and rollup partials): a fixed header, then per row a field count and
//! length-prefixed big-endian fields, then a trailer. Binary COPY skips text parsing on
//! the server, which is where most of a text COPY's CPU goes.

use telemetry::{EventTime, Reading};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

pub struct CopyEncoder {
    buf: Vec<u8>,
}

impl CopyEncoder {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 19);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf }
    }

    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    pub fn text(&mut self, s: &str) {
        // Ids are at most 64 bytes and topics are truncated: lengths always fit.
        self.buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub fn timestamptz(&mut self, t: EventTime) {
        self.i64(t.millis().saturating_mul(1_000).saturating_sub(PG_EPOCH_OFFSET_MICROS));
    }

    /// A reading's five columns, in `readings`' order: time, device, metric, value, seq
    /// (NULL when the device sent none). The row's field count is the caller's: the writer
    /// adds the batch column.
    pub fn reading(&mut self, r: &Reading) {
        self.timestamptz(r.time);
        self.text(r.device.as_str());
        self.text(r.metric.as_str());
        self.f64(r.value);
        match r.seq {
            Some(s) => self.i64(i64::try_from(s.0).unwrap_or(i64::MAX)),
            None => self.null(),
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_row_and_trailer() {
        let mut e = CopyEncoder::with_capacity(0);
        e.row(3);
        e.timestamptz(EventTime(946_684_800_001)); // 2000-01-01T00:00:00.001Z
        e.text("ab");
        e.null();
        let bytes = e.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(&[0, 3]);
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        want.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, want);
    }
}
