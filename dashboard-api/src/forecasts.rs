//! `GET /api/v1/forecasts`: each segment's short-term forecast of speed and LOS
//! (`stream::forecast`), as made from its newest window.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::{self, Params};
use crate::AppState;

pub async fn forecasts(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut p = Params::parse(raw.as_deref())?;
    let segment = p.take("segment").map(|v| params::segment("segment", &v)).transpose()?;
    let degrading = params::boolean("degrading", p.take("degrading").as_deref())?;
    p.finish()?;
    if let Some(s) = &segment {
        if !state.store.unknown_segments(std::slice::from_ref(s)).await?.is_empty() {
            return Err(ApiError::unknown("segment", format!("road segment {s} does not exist")));
        }
    }
    let states: Vec<stream::SegmentState> = match &segment {
        Some(s) => state.hub.segment_state(s).into_iter().collect(),
        None => {
            let mut all = state.hub.all_segment_states();
            all.sort_by(|a, b| a.segment.cmp(&b.segment));
            all
        }
    };
    let forecasts: Vec<Value> = states
        .iter()
        .filter_map(|s| {
            let f = s.forecast.as_ref()?;
            (!degrading || f.degrading).then(|| {
                json!({
                    "segment": s.segment,
                    "window": {"start": s.start, "end": s.end, "revision": s.revision},
                    "speed_kmh": s.speed_kmh,
                    "los": s.los,
                    "forecast": f,
                })
            })
        })
        .collect();
    Ok(Json(json!({ "forecasts": forecasts })))
}
