//! Embeds the wall dashboard: writes `$OUT_DIR/web_assets.rs`, a table of
//! `(path, include_bytes!(…))` for every file under the workspace's `web/` folder (but
//! `node_modules/` and the npm manifests, which only `scripts/vendor-web.sh` uses), so
//! the binary serves the UI with no file on disk and no network.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with('.')
            || name == "node_modules"
            || name == "package.json"
            || name == "package-lock.json"
        {
            continue;
        }
        if path.is_dir() {
            collect(&path, root, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path.clone()));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.parent().expect("workspace root").join("web");
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    collect(&web, &web, &mut files);
    let mut code = String::from("/// Every embedded file of `web/`: (path relative to `web/`, contents).\npub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &files {
        // Directories are watched for added or removed files, files for edits.
        println!("cargo:rerun-if-changed={}", path.display());
        if let Some(parent) = path.parent() {
            println!("cargo:rerun-if-changed={}", parent.display());
        }
        writeln!(code, "    ({rel:?}, include_bytes!({:?})),", path.display().to_string())
            .expect("write to a String");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_assets.rs");
    std::fs::write(out, code).expect("write web_assets.rs");
}
