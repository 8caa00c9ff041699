//! Discord's JSON error bodies: `{"message": …, "code": …}`, with `errors` for form errors.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answer of the REST API.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// `{"message": message, "code": code}` with `status`.
    pub(crate) fn new(status: StatusCode, code: u32, message: &str) -> Self {
        Self {
            status,
            body: json!({ "message": message, "code": code }),
        }
    }

    /// The status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body it answers with.
    #[cfg(test)]
    pub(crate) fn body(&self) -> &Value {
        &self.body
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, 0, "404: Not Found")
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, 0, "405: Method Not Allowed")
    }

    pub(crate) fn unknown_channel() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10003, "Unknown Channel")
    }

    pub(crate) fn unknown_guild() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10004, "Unknown Guild")
    }

    pub(crate) fn unknown_member() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10007, "Unknown Member")
    }

    pub(crate) fn unknown_message() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10008, "Unknown Message")
    }

    pub(crate) fn unknown_webhook() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10015, "Unknown Webhook")
    }

    pub(crate) fn unknown_emoji() -> Self {
        Self::new(StatusCode::BAD_REQUEST, 10014, "Unknown Emoji")
    }

    pub(crate) fn unknown_interaction() -> Self {
        Self::new(StatusCode::NOT_FOUND, 10062, "Unknown interaction")
    }

    /// An interaction token older than 15 minutes.
    pub(crate) fn invalid_webhook_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token")
    }

    pub(crate) fn already_acknowledged() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        )
    }

    /// A bot token naming an application other than its own (`/applications/{id}/…`).
    pub(crate) fn not_application_owner() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            20012,
            "You are not authorized to perform this action on this application",
        )
    }

    /// More commands of one type than a scope may hold (100 `CHAT_INPUT`, 15 `USER`, …).
    pub(crate) fn too_many_commands(limit: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            30032,
            &format!("Maximum number of application commands reached ({limit})"),
        )
    }

    pub(crate) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        )
    }

    pub(crate) fn missing_access() -> Self {
        Self::new(StatusCode::FORBIDDEN, 50001, "Missing Access")
    }

    pub(crate) fn not_author() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            50005,
            "Cannot edit a message authored by another user",
        )
    }

    pub(crate) fn empty_message() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        )
    }

    pub(crate) fn non_text_channel() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            50008,
            "Cannot send messages in a non-text channel",
        )
    }

    pub(crate) fn missing_permissions() -> Self {
        Self::new(StatusCode::FORBIDDEN, 50013, "Missing Permissions")
    }

    pub(crate) fn invalid_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        )
    }

    /// A 5xx as Discord's edge answers it.
    pub(crate) fn server(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = format!(
            "{}: {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Server Error")
        );
        Self::new(status, 0, &message)
    }
}

impl From<FormErrors> for ApiError {
    fn from(errors: FormErrors) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": Value::Object(errors.0),
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The `errors` object of a 50035 Invalid Form Body, built field by field:
/// `{"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "…"}]}}`.
#[derive(Debug, Default)]
pub(crate) struct FormErrors(Map<String, Value>);

impl FormErrors {
    /// Adds an error at `path` (e.g. `["embeds", "0"]`; empty for the body itself).
    pub(crate) fn add(&mut self, path: &[&str], code: &str, message: &str) {
        let mut node = &mut self.0;
        for key in path {
            let entry = node
                .entry((*key).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else {
                return;
            };
            node = next;
        }
        let list = node
            .entry("_errors")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(json!({ "code": code, "message": message }));
        }
    }

    /// Whether no error was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many errors were added, at any depth.
    pub(crate) fn len(&self) -> usize {
        fn count(map: &Map<String, Value>) -> usize {
            map.iter()
                .map(|(key, value)| match value {
                    Value::Array(list) if key == "_errors" => list.len(),
                    Value::Object(inner) => count(inner),
                    _ => 0,
                })
                .sum()
        }
        count(&self.0)
    }

    /// `Err` with a 50035 when any error was added.
    pub(crate) fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.into())
        }
    }

    /// A single error at `path`.
    pub(crate) fn single(path: &[&str], code: &str, message: &str) -> ApiError {
        let mut errors = Self::default();
        errors.add(path, code, message);
        errors.into()
    }
}

#[cfg(test)]
mod tests {
    use super::FormErrors;

    #[test]
    fn form_errors_nest() {
        let mut e = FormErrors::default();
        e.add(
            &["embeds", "0", "title"],
            "BASE_TYPE_MAX_LENGTH",
            "too long",
        );
        e.add(&["content"], "BASE_TYPE_MAX_LENGTH", "too long");
        e.add(&["embeds", "0", "title"], "X", "again");
        let v = serde_json::Value::Object(e.0);
        assert_eq!(v["embeds"]["0"]["title"]["_errors"][1]["code"], "X");
        assert_eq!(v["content"]["_errors"][0]["message"], "too long");
    }
}
