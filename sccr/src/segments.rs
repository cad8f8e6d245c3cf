//! `sccr segments import FILE`: the Road Cadastre import (docs/cadastre.md) of a GeoJSON,
//! Shapefile or GeoPackage file ([`crate::cadastre_files`]). The file is read and checked
//! whole first (every problem listed, each naming its feature); only a
//! file without any is imported, in one transaction ([`store::cadastre`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use store::cadastre::ImportSummary;
use telemetry::cadastre::{self, CadastreError, Crs};
use telemetry::EventTime;

use crate::cadastre_files::{read_geopackage, read_shapefile, Format, MAX_FILE_BYTES};
use crate::config::Config;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The road graph: a GeoJSON FeatureCollection (.geojson, .json), a Shapefile (.shp
    /// with its .dbf and .prj) or a GeoPackage (.gpkg) of LineStrings and
    /// MultiLineStrings.
    pub file: PathBuf,
    /// The coordinates' reference system when the file names none (a GeoJSON `crs`
    /// member, a Shapefile's .prj, a GeoPackage's srs_id): EPSG:4326, EPSG:3003, EPSG:6707
    /// or EPSG:7791.
    #[arg(long, value_name = "EPSG:n")]
    pub crs: Option<String>,
    /// The GeoPackage's feature table to read (needed when it has more than one).
    #[arg(long, value_name = "TABLE")]
    pub layer: Option<String>,
    /// Check the file and say what the import would do, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the outcome as JSON to this file (the summary, or the errors).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Read a file of at most [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    let read = file
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (UTF-8 text expected)", path.display()))?;
    anyhow::ensure!(
        read as u64 <= MAX_FILE_BYTES,
        "{} is larger than {} MiB",
        path.display(),
        MAX_FILE_BYTES / 1024 / 1024
    );
    Ok(text)
}

fn write_report(path: Option<&Path>, value: &serde_json::Value) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Parse and check a cadastre file, of the format its extension names, with the
/// configuration's mapping.
pub async fn read(
    path: &Path,
    crs: Option<&str>,
    layer: Option<&str>,
    config: &Config,
) -> Result<cadastre::Cadastre, CadastreError> {
    let given = crs.map(Crs::parse).transpose()?;
    let format = Format::of(path)?;
    if layer.is_some() && format != Format::GeoPackage {
        return Err(CadastreError::Unreadable {
            format: "file",
            message: "--layer names a GeoPackage's feature table; this is not a .gpkg".into(),
        });
    }
    let (features, file_crs) = match format {
        Format::GeoJson => {
            let text =
                read_capped(path).map_err(|e| CadastreError::NotGeoJson(format!("{e:#}")))?;
            return cadastre::parse(&text, given, &config.cadastre);
        }
        Format::Shapefile => read_shapefile(path)?,
        Format::GeoPackage => read_geopackage(path, layer).await?,
    };
    let crs = cadastre::pick_crs(file_crs, given)?;
    cadastre::parse_features(features, crs, &config.cadastre)
}

pub async fn import(config: &Config, args: &ImportArgs) -> Result<ImportSummary> {
    let parsed = match read(&args.file, args.crs.as_deref(), args.layer.as_deref(), config).await {
        Ok(p) => p,
        Err(e) => {
            let errors = match &e {
                CadastreError::Features { errors, .. } => {
                    errors.iter().map(|f| serde_json::to_value(f).unwrap_or_default()).collect()
                }
                other => vec![json!({"problem": other.to_string()})],
            };
            if let CadastreError::Features { errors, .. } = &e {
                for f in errors {
                    eprintln!("{f}");
                }
            }
            write_report(
                args.report.as_deref(),
                &json!({"imported": false, "error": e.to_string(), "errors": errors}),
            )?;
            return Err(
                anyhow::Error::new(e).context(format!("{}: nothing imported", args.file.display()))
            );
        }
    };
    anyhow::ensure!(
        !parsed.segments.is_empty(),
        "{}: the file holds no segment; nothing imported (an empty cadastre would retire every segment)",
        args.file.display()
    );
    let store = crate::pipeline::connect_store(config).await?;
    let summary = store
        .import_cadastre(
            &parsed.segments,
            config.cadastre.link_max_distance_m,
            EventTime::now(),
            args.dry_run,
        )
        .await;
    store.close().await;
    let summary = summary.context("importing the cadastre")?;
    write_report(
        args.report.as_deref(),
        &json!({"imported": !args.dry_run, "crs": parsed.crs.to_string(), "summary": summary}),
    )?;
    Ok(summary)
}

/// The summary as the command prints it.
pub fn describe(s: &ImportSummary) -> String {
    let mut out = format!(
        "{}added {}, changed {}, retired {}, unchanged {}; devices linked {} ({} moved), ambiguous {}, unmatched {}",
        if s.dry_run { "dry run, nothing written: " } else { "" },
        s.added,
        s.changed,
        s.retired,
        s.unchanged,
        s.devices_linked,
        s.devices_relinked,
        s.ambiguous.len(),
        s.unmatched.len()
    );
    for a in &s.ambiguous {
        if let cadastre::link::LinkOutcome::Ambiguous { device, candidates } = a {
            let c: Vec<String> = candidates
                .iter()
                .map(|c| format!("{} at {:.1} m", c.segment, c.distance_m))
                .collect();
            out.push_str(&format!("\nambiguous: device {device}: {}", c.join(", ")));
        }
    }
    out
}
