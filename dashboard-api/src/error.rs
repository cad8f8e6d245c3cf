//! The one place errors become HTTP responses: a status and a JSON body
//! `{"error": {"code": "...", "message": "...", "param": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The query parameter or field at fault, when there is one.
    pub param: Option<String>,
}

impl ApiError {
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "bad_parameter", message: message.into(), param: Some(param.to_owned()) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into(), param: None }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into(), param: None }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        if let store::StoreError::InvalidQuery { param, message } = e {
            return ApiError::bad_param(param, message);
        }
        tracing::error!(error = %e, "store error in API");
        if e.is_transient() {
            ApiError::unavailable("the database is unavailable; retry shortly")
        } else {
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal",
                message: "internal error; see the server log".into(),
                param: None,
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message, "param": self.param }
        });
        (self.status, Json(body)).into_response()
    }
}
