//! The wall map's basemap: what `[wall] basemap` names ([`Basemap`]), and the PMTiles
//! file it may name, served at [`PMTILES_PATH`] with no token (map tiles are not secret,
//! like the dashboard's static files) and with HTTP Range support, which the PMTiles
//! client needs: it reads the archive's header, directories and tiles by byte range.
//!
//! Ranges ([`parse_range`]): one range of `bytes=a-b`, `bytes=a-` or `bytes=-n` answers
//! 206 with `Content-Range`; an end past the file is cut to the file, a suffix longer than
//! the file is the whole file. A range that starts past the end, an empty suffix
//! (`bytes=-0`), an empty file, a malformed header, another unit than `bytes` and a
//! request for several ranges answer 416 with `Content-Range: bytes */size`: a client
//! that asked for part of a multi-gigabyte file never gets all of it by mistake. Without
//! `Range`, or with an `If-Range` that is not the current `ETag`, the whole file (200).
//! Every answer says `Accept-Ranges: bytes` and carries an `ETag` made of the file's size
//! and modification time; `If-None-Match` with it answers 304.
//!
//! The file is opened for each request and read with positioned reads in chunks of
//! [`CHUNK`] on the blocking pool, never loaded whole; at most [`MAX_TRANSFERS`] answers
//! are read at once, a request that waits longer than [`QUEUE_WAIT`] for its turn gets 503.

use std::fs::File;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    IF_RANGE, RANGE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Where the configured PMTiles file is served.
pub const PMTILES_PATH: &str = "/basemap.pmtiles";
/// Most basemap answers read from disk at once.
pub const MAX_TRANSFERS: usize = 32;
/// How long a request waits for one of the [`MAX_TRANSFERS`] places before a 503.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Bytes read from the file at a time.
pub const CHUNK: usize = 64 * 1024;
/// Longest `basemap_attribution`.
pub const MAX_ATTRIBUTION: usize = 300;
/// Deepest zoom a basemap may claim.
pub const MAX_ZOOM: u8 = 22;
/// `basemap_max_zoom` when not configured.
pub const DEFAULT_MAX_ZOOM: u8 = 19;
/// The built-in offline context layer the wall draws when no basemap is configured.
pub const CONTEXT_LAYER: &str = "web/geo/florence-context.geojson";

/// What the wall map draws under the city's segments and devices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Basemap {
    /// The built-in offline context layer ([`CONTEXT_LAYER`]); nothing from the network.
    #[default]
    Context,
    /// Raster tiles from an XYZ server (`http(s)://…/{z}/{x}/{y}…`).
    Xyz(String),
    /// A PMTiles archive on this server's disk, served at [`PMTILES_PATH`].
    Pmtiles(PathBuf),
}

impl Basemap {
    /// Read `[wall] basemap`: empty for the context layer, an http(s) URL template with
    /// `{z}`, `{x}` and `{y}` (and no other `{…}`), or the path of a `.pmtiles` file that
    /// exists and can be read now. The error says what is wrong, without the key.
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(Basemap::Context);
        }
        if v.len() > 2_048 || v.chars().any(char::is_control) {
            return Err("must be at most 2048 characters without control characters".into());
        }
        let lower = v.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return check_template(v).map(|()| Basemap::Xyz(v.to_owned()));
        }
        if lower.contains("://") {
            return Err(format!(
                "{v:?} is neither an http(s) URL template nor a .pmtiles file path"
            ));
        }
        if !lower.ends_with(".pmtiles") {
            return Err(format!(
                "{v:?} is neither an http(s) URL template with {{z}}, {{x}} and {{y}} nor a \
                 path ending in .pmtiles"
            ));
        }
        let path = PathBuf::from(v);
        let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {v:?}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{v:?} is not a file"));
        }
        File::open(&path).map_err(|e| format!("cannot read {v:?}: {e}"))?;
        Ok(Basemap::Pmtiles(path))
    }
}

/// An XYZ template: a host, `{z}`, `{x}`, `{y}` each once, no other placeholder.
fn check_template(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(['{', '}']) {
        return Err(format!("{url:?} has no host (placeholders go in the path or the query)"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("{url:?} contains spaces"));
    }
    for p in ["{z}", "{x}", "{y}"] {
        match url.matches(p).count() {
            1 => {}
            0 => {
                return Err(format!(
                    "{url:?} lacks {p}; an XYZ template has {{z}}, {{x}} and {{y}}"
                ))
            }
            _ => return Err(format!("{url:?} has {p} more than once")),
        }
    }
    let stripped = url.replace("{z}", "").replace("{x}", "").replace("{y}", "");
    if stripped.contains(['{', '}']) {
        return Err(format!(
            "{url:?} has a placeholder other than {{z}}, {{x}} and {{y}} (subdomains such as {{s}} are not supported)"
        ));
    }
    Ok(())
}

/// The wall's map settings (`[wall]`), as `GET /api/v1/wall` tells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WallSettings {
    pub basemap: Basemap,
    pub attribution: String,
    pub max_zoom: u8,
}

impl Default for WallSettings {
    fn default() -> Self {
        Self { basemap: Basemap::Context, attribution: String::new(), max_zoom: DEFAULT_MAX_ZOOM }
    }
}

impl WallSettings {
    /// The `basemap` object of `GET /api/v1/wall`.
    pub fn basemap_json(&self) -> serde_json::Value {
        use serde_json::json;
        match &self.basemap {
            Basemap::Context => json!({"kind": "context"}),
            Basemap::Xyz(url) => json!({"kind": "xyz", "url": url,
                "attribution": self.attribution, "max_zoom": self.max_zoom}),
            Basemap::Pmtiles(_) => json!({"kind": "pmtiles", "url": PMTILES_PATH,
                "attribution": self.attribution, "max_zoom": self.max_zoom}),
        }
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send the whole file (200).
    Whole,
    /// These bytes, inclusive (206).
    Part(RangeInclusive<u64>),
    /// Not satisfiable, malformed or several ranges (416).
    Unsatisfiable,
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Read a `Range` header for a file of `size` bytes (see the module doc for the rules).
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    use RangeRequest::{Part, Unsatisfiable};
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Unsatisfiable };
    let spec = spec.trim();
    if spec.contains(',') || size == 0 {
        return Unsatisfiable;
    }
    let Some((first, last)) = spec.split_once('-') else { return Unsatisfiable };
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match number(last) {
            Some(0) | None => Unsatisfiable,
            Some(n) => Part(size.saturating_sub(n)..=size - 1),
        },
        // bytes=a-: from a to the end.
        (false, true) => match number(first) {
            Some(a) if a < size => Part(a..=size - 1),
            _ => Unsatisfiable,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b && a < size => Part(a..=b.min(size - 1)),
            _ => Unsatisfiable,
        },
        (true, true) => Unsatisfiable,
    }
}

/// Serves one file by range, at most [`MAX_TRANSFERS`] answers at once.
#[derive(Debug, Clone)]
pub struct RangeFile {
    path: Arc<PathBuf>,
    places: Arc<Semaphore>,
    wait: Duration,
}

impl RangeFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_limits(path, MAX_TRANSFERS, QUEUE_WAIT)
    }

    /// At most `transfers` answers read at once; a request waits `wait` for its turn.
    pub fn with_limits(path: impl Into<PathBuf>, transfers: usize, wait: Duration) -> Self {
        Self {
            path: Arc::new(path.into()),
            places: Arc::new(Semaphore::new(transfers.max(1))),
            wait,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answer a GET (or HEAD: the server drops the body) for the file.
    pub async fn serve(&self, headers: &HeaderMap) -> Response {
        let permit =
            match tokio::time::timeout(self.wait, self.places.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    let mut resp = ApiError::unavailable(
                        "the basemap is busy serving other requests; retry shortly",
                    )
                    .into_response();
                    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
                    return resp;
                }
            };
        let path = self.path.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let file = File::open(&*path)?;
            let meta = file.metadata()?;
            Ok::<_, std::io::Error>((file, meta))
        })
        .await;
        let (file, meta) = match opened {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the basemap file");
                return ApiError::unavailable("the basemap file cannot be read").into_response();
            }
            Err(_) => {
                return ApiError::unavailable("the basemap file cannot be read").into_response()
            }
        };
        let size = meta.len();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let tag = format!("\"{size:x}-{mtime:x}\"");
        let tag_value =
            HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let mut common = HeaderMap::new();
        common.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        common.insert(ETAG, tag_value);
        common.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
        common.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        let header = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        if header(IF_NONE_MATCH)
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
        {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        // If-Range with another validator: the file changed since the client's part; send
        // it whole.
        let range_applies = header(IF_RANGE).is_none_or(|v| v.trim() == tag);
        let request = if headers.get(RANGE).is_none() || !range_applies {
            RangeRequest::Whole
        } else {
            // A header that is not text is malformed too.
            header(RANGE).map_or(RangeRequest::Unsatisfiable, |r| parse_range(r, size))
        };
        let (status, range) = match request {
            RangeRequest::Whole => (StatusCode::OK, 0..=size.saturating_sub(1)),
            RangeRequest::Part(r) => {
                let value = format!("bytes {}-{}/{size}", r.start(), r.end());
                if let Ok(v) = HeaderValue::from_str(&value) {
                    common.insert(CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, r)
            }
            RangeRequest::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    common.insert(CONTENT_RANGE, v);
                }
                let mut resp = ApiError {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    code: "range_not_satisfiable",
                    message: format!(
                        "Range must be one range of bytes=first-last, bytes=first- or bytes=-suffix within the file's {size} bytes"
                    ),
                    param: None,
                    errors: Vec::new(),
                }
                .into_response();
                resp.headers_mut().extend(common);
                return resp;
            }
        };
        let length = if size == 0 { 0 } else { range.end() - range.start() + 1 };
        common.insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.pmtiles"));
        common.insert(CONTENT_LENGTH, HeaderValue::from(length));
        let body = if length == 0 {
            Body::empty()
        } else {
            stream_body(file, *range.start(), length, permit)
        };
        (status, common, body).into_response()
    }
}

/// The bytes `[start, start + length)` of `file`, read in chunks on the blocking pool;
/// `permit` is held until the last chunk is read or the client goes away.
fn stream_body(
    file: File,
    start: u64,
    length: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(2);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut offset = start;
        let end = start + length;
        while offset < end {
            let want = usize::try_from((end - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            let mut buf = vec![0u8; want];
            let read = read_at(&file, &mut buf, offset);
            let stop = read.is_err();
            if tx.blocking_send(read.map(|()| buf)).is_err() || stop {
                // The client went away, or the file shrank under us.
                return;
            }
            offset += want as u64;
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Body::from_stream(chunks)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::{Part, Unsatisfiable};

    #[test]
    fn single_ranges_are_read_and_cut_to_the_file() {
        assert_eq!(parse_range("bytes=0-0", 100), Part(0..=0));
        assert_eq!(parse_range("bytes=99-99", 100), Part(99..=99));
        assert_eq!(parse_range("bytes=10-", 100), Part(10..=99));
        assert_eq!(parse_range("bytes=90-200", 100), Part(90..=99), "end cut to the file");
        assert_eq!(parse_range("bytes=-10", 100), Part(90..=99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0..=99), "suffix longer than the file");
        assert_eq!(parse_range(" bytes= 5 - 6 ", 100), Part(5..=6));
        assert_eq!(parse_range("bytes=0-16383", 500), Part(0..=499));
    }

    #[test]
    fn bad_or_unsatisfiable_ranges_are_refused() {
        for bad in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=-0",
            "bytes=5-4",
            "bytes=-",
            "bytes=",
            "bytes=a-b",
            "bytes=1-2,4-5",
            "bytes=+1-2",
            "bytes=1--2",
            "items=0-1",
            "bytes 0-1",
            "bytes=99999999999999999999999-",
            "",
        ] {
            assert_eq!(parse_range(bad, 100), Unsatisfiable, "{bad:?}");
        }
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable, "an empty file has no bytes");
    }

    #[tokio::test]
    async fn transfers_are_bounded_and_a_finished_one_frees_its_place() {
        let dir = std::env::temp_dir().join(format!("sccr-basemap-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("busy.pmtiles");
        std::fs::write(&path, vec![7u8; 4 * CHUNK]).unwrap();
        let file = RangeFile::with_limits(&path, 1, Duration::from_millis(50));
        // A whole-file answer whose body is not read holds the only place.
        let first = file.serve(&HeaderMap::new()).await;
        assert_eq!(first.status(), StatusCode::OK);
        let busy = file.serve(&HeaderMap::new()).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[RETRY_AFTER], "1");
        // Reading it to the end frees the place.
        let body = axum::body::to_bytes(first.into_body(), 8 * CHUNK).await.unwrap();
        assert_eq!(body.len(), 4 * CHUNK);
        let mut range = HeaderMap::new();
        range.insert(RANGE, HeaderValue::from_static("bytes=0-9"));
        let when_free = |headers: HeaderMap| {
            let file = file.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        let r = file.serve(&headers).await;
                        if r.status() != StatusCode::SERVICE_UNAVAILABLE {
                            return r;
                        }
                    }
                })
                .await
                .expect("the place is freed")
            }
        };
        let again = when_free(range.clone()).await;
        assert_eq!(again.status(), StatusCode::PARTIAL_CONTENT);
        drop(again);
        // So does a client that goes away without reading.
        let dropped = when_free(HeaderMap::new()).await;
        assert_eq!(dropped.status(), StatusCode::OK);
        drop(dropped);
        assert_eq!(when_free(range).await.status(), StatusCode::PARTIAL_CONTENT);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn basemap_values_are_checked() {
        assert_eq!(Basemap::parse("  "), Ok(Basemap::Context));
        let url = "https://tiles.example.org/osm/{z}/{x}/{y}.png";
        assert_eq!(Basemap::parse(url), Ok(Basemap::Xyz(url.into())));
        assert!(Basemap::parse("http://10.0.0.5:8080/{z}/{x}/{y}.png?key=a").is_ok());
        for bad in [
            "https://tiles.example.org/{z}/{x}.png",
            "https://{s}.tiles.example.org/{z}/{x}/{y}.png",
            "https://tiles.example.org/{z}/{x}/{y}/{r}.png",
            "https://tiles.example.org/{z}/{x}/{y}/{y}.png",
            "ftp://tiles.example.org/{z}/{x}/{y}.png",
            "https:///{z}/{x}/{y}.png",
            "https://tiles.example.org/{z}/{x}/{y} .png",
            "tiles/{z}/{x}/{y}.png",
            "/nonexistent/city.pmtiles",
            "/etc",
        ] {
            assert!(Basemap::parse(bad).is_err(), "{bad:?}");
        }
        let dir = std::env::temp_dir().join(format!("sccr-basemap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("city.pmtiles");
        std::fs::write(&file, b"PMTiles").unwrap();
        let text = file.to_str().unwrap();
        assert_eq!(Basemap::parse(text), Ok(Basemap::Pmtiles(file.clone())));
        let folder = dir.join("folder.pmtiles");
        std::fs::create_dir_all(&folder).unwrap();
        assert!(Basemap::parse(folder.to_str().unwrap()).unwrap_err().contains("not a file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
