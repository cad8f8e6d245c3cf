//! The wall dashboard's static files (`web/` in the workspace), embedded in the binary by
//! `build.rs` and served under `/` with no token: `/` is `index.html`, every other file at
//! its path. Each file gets an exact route, so unknown paths still reach the API's JSON
//! 404 fallback.
//!
//! For work on the dashboard itself, `SCCR_WEB_DIR=web` makes the server read the files
//! from that folder on every request instead (no rebuild per edit); only files inside the
//! folder are served, and the embedded table still decides which paths exist.
//!
//! Caching: third-party libraries under `vendor/` (pinned versions) may be cached for a
//! day; the dashboard's own files are revalidated on every load (`no-cache`) against a
//! strong `ETag` of their contents, answered with `304 Not Modified` when unchanged.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The media type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("geojson") => "application/geo+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("wav") => "audio/wav",
        Some("txt") | None => "text/plain; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        _ if path.ends_with("LICENSE") || path.ends_with("VERSIONS") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// FNV-1a 64 of the contents: a strong validator for an embedded file.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn asset_response(
    path: &'static str,
    bytes: &'static [u8],
    tag: HeaderValue,
    headers: &HeaderMap,
) -> Response {
    let cache = if path.starts_with("vendor/") { "public, max-age=86400" } else { "no-cache" };
    let common = [
        (CACHE_CONTROL, HeaderValue::from_static(cache)),
        (ETAG, tag.clone()),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    let matches = headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|t| t.trim() == tag.to_str().unwrap_or_default() || t.trim() == "*")
    });
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (StatusCode::OK, common, [(CONTENT_TYPE, HeaderValue::from_static(content_type(path)))], bytes)
        .into_response()
}

/// Routes for every embedded file, and `/` for `index.html`.
pub fn router() -> Router<AppState> {
    if let Some(dir) = std::env::var_os("SCCR_WEB_DIR").map(std::path::PathBuf::from) {
        tracing::warn!(dir = %dir.display(), "serving the dashboard from disk (SCCR_WEB_DIR)");
        let root = dir.clone();
        return Router::new()
            .route("/", get(move || from_disk(root.clone(), "index.html".to_owned())))
            .route(
                "/{*path}",
                get(move |axum::extract::Path(path): axum::extract::Path<String>| {
                    from_disk(dir.clone(), path)
                }),
            );
    }
    let mut router = Router::new();
    for &(path, bytes) in ASSETS {
        let tag = HeaderValue::from_str(&etag(bytes))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let handler = move |headers: HeaderMap| {
            let tag = tag.clone();
            async move { asset_response(path, bytes, tag, &headers) }
        };
        if path == "index.html" {
            router = router.route("/", get(handler.clone()));
        }
        router = router.route(&format!("/{path}"), get(handler));
    }
    router
}

/// A dashboard file read from `SCCR_WEB_DIR` (development only): never cached; paths
/// with `..`, hidden parts or the API's prefix are not served.
async fn from_disk(dir: std::path::PathBuf, path: String) -> Response {
    let safe = !path.starts_with("api/")
        && path.split('/').all(|part| !part.is_empty() && !part.starts_with('.'));
    if !safe {
        return crate::ApiError::not_found("no such route").into_response();
    }
    match tokio::fs::read(dir.join(&path)).await {
        Ok(bytes) => (
            StatusCode::OK,
            [
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (CONTENT_TYPE, HeaderValue::from_static(content_type(&path))),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => crate::ApiError::not_found("no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_and_its_libraries_are_embedded() {
        let paths: Vec<&str> = ASSETS.iter().map(|(p, _)| *p).collect();
        for p in [
            "index.html",
            "app/main.js",
            "app/i18n.js",
            "geo/florence-context.geojson",
            "style.css",
            "vendor/leaflet/leaflet.js",
            "vendor/leaflet/LICENSE",
            "vendor/uplot/uPlot.iife.min.js",
            "vendor/uplot/LICENSE",
            "vendor/pmtiles/pmtiles.js",
            "vendor/pmtiles/LICENSE",
            "vendor/pmtiles/fflate-LICENSE",
        ] {
            assert!(paths.contains(&p), "{p} is not embedded: {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.contains("node_modules") || p.ends_with("package.json")));
    }

    #[test]
    fn own_files_are_revalidated_and_unchanged_ones_answer_304() {
        let (path, bytes) = ASSETS.iter().find(|(p, _)| *p == "app/main.js").copied().unwrap();
        let tag = HeaderValue::from_str(&etag(bytes)).unwrap();
        let fresh = asset_response(path, bytes, tag.clone(), &HeaderMap::new());
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(fresh.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, tag.clone());
        assert_eq!(
            asset_response(path, bytes, tag.clone(), &headers).status(),
            StatusCode::NOT_MODIFIED
        );
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(asset_response(path, bytes, tag, &headers).status(), StatusCode::OK);
        let (vpath, vbytes) =
            ASSETS.iter().find(|(p, _)| p.starts_with("vendor/")).copied().unwrap();
        let vendor =
            asset_response(vpath, vbytes, HeaderValue::from_static("\"v\""), &HeaderMap::new());
        assert_eq!(vendor.headers()[CACHE_CONTROL], "public, max-age=86400");
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("vendor/leaflet/leaflet.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("vendor/leaflet/images/layers.png"), "image/png");
        assert_eq!(content_type("vendor/uplot/LICENSE"), "text/plain; charset=utf-8");
        assert_eq!(content_type("vendor/pmtiles/fflate-LICENSE"), "text/plain; charset=utf-8");
    }
}
