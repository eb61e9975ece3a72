//! `ApiError`: every failure becomes a status code and a JSON `{message, detail?}` body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxumResponse};

use super::types::Response;
use crate::proc::{ProcError, UserError};

/// A failed request: the status and the `{message, detail?}` body it is answered with.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One sentence for the caller (the body's `message`).
    pub message: String,
    /// The underlying cause (the body's `detail`), when there is one.
    pub detail: Option<String>,
}

impl ApiError {
    /// An error without `detail`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds the underlying cause.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The 400 for a body that is not valid JSON or not the expected shape; `detail` is the
    /// parser's message.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request body must be valid JSON.")
            .with_detail(detail.to_string())
    }
}

impl From<ProcError> for ApiError {
    fn from(e: ProcError) -> Self {
        use std::error::Error;
        let status = match &e {
            ProcError::EmptyCommand
            | ProcError::InvalidEnv(_)
            | ProcError::WorkdirMissing(_)
            | ProcError::WorkdirUnusable { .. }
            | ProcError::Limit(_)
            | ProcError::User(UserError::Unknown(_) | UserError::NotRoot(_)) => {
                StatusCode::BAD_REQUEST
            }
            ProcError::User(UserError::Lookup(..)) => StatusCode::INTERNAL_SERVER_ERROR,
            ProcError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProcError::TooManyRunning(_) | ProcError::TooManyTracked(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProcError::IdempotencyConflict(_)
            | ProcError::NotRunning(_)
            | ProcError::StillRunning(_)
            | ProcError::NoStdin(..)
            | ProcError::StdinWrite(..)
            | ProcError::NoTerminal(_) => StatusCode::CONFLICT,
            ProcError::StdinTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProcError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProcError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ProcError::NotFound(_) => StatusCode::NOT_FOUND,
            ProcError::Spawn(_) | ProcError::Signal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = match &e {
            ProcError::Refused(why) => Some(why.clone()),
            _ => e.source().map(|s| s.to_string()),
        };
        Self {
            status,
            message: e.to_string(),
            detail,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> AxumResponse {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, detail = ?self.detail, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        (
            self.status,
            Json(Response {
                message: self.message,
                detail: self.detail,
            }),
        )
            .into_response()
    }
}
