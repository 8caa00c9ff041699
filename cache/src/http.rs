//! The read-only HTTP API for dashboards. Every answer is JSON: the stored values as they are in
//! the bucket (see [`crate::schema`]), arrays of them for lists, `{"error": "..."}` otherwise.
//!
//! | route | answer |
//! |---|---|
//! | `GET /guilds/{id}` | `guild.<id>` |
//! | `GET /guilds/{id}/channels` | the guild's channels and threads (`channel_ids` order) |
//! | `GET /guilds/{id}/roles` | the guild's roles (`role_ids` order) |
//! | `GET /guilds/{id}/members` | the user ids of its cached members, ascending (a key listing) |
//! | `GET /guilds/{id}/members/{user}` | `member.<id>.<user>` |
//! | `GET /channels/{id}` | `channel.<id>` |
//! | `GET /users/{id}` | `user.<id>` |
//! | `GET /counts` | keys by kind (a listing of every key: for dashboards, not hot paths) |
//!
//! 400 for an id that is not a snowflake, 404 for one the cache doesn't hold, 503 when NATS does
//! not answer.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use shardyard_protocol::names::keys;

use crate::reader::{CacheReader, ReadError};
use crate::schema::Id;

/// The API's routes over `reader`.
pub fn router(reader: CacheReader) -> Router {
    Router::new()
        .route("/guilds/{id}", get(guild))
        .route("/guilds/{id}/channels", get(channels))
        .route("/guilds/{id}/roles", get(roles))
        .route("/guilds/{id}/members", get(member_ids))
        .route("/guilds/{id}/members/{user}", get(member))
        .route("/channels/{id}", get(channel))
        .route("/users/{id}", get(user))
        .route("/counts", get(counts))
        .with_state(reader)
}

enum ApiError {
    BadId(String),
    NotFound(String),
    Unavailable(ReadError),
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        Self::Unavailable(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::BadId(id) => (StatusCode::BAD_REQUEST, format!("not a snowflake: {id:?}")),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, format!("{what} is not cached")),
            Self::Unavailable(error) => {
                tracing::warn!(%error, "reading the cache for the HTTP API");
                (StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
        };
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    }
}

fn snowflake(raw: &str) -> Result<u64, ApiError> {
    match raw.parse::<u64>() {
        Ok(id) if id > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::BadId(raw.to_owned())),
    }
}

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn value(reader: &CacheReader, key: String) -> Result<Response, ApiError> {
    match reader.raw(&key).await? {
        Some(body) => Ok(json(body)),
        None => Err(ApiError::NotFound(key)),
    }
}

async fn guild(
    State(reader): State<CacheReader>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    value(&reader, keys::guild(snowflake(&id)?)).await
}

async fn channel(
    State(reader): State<CacheReader>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    value(&reader, keys::channel(snowflake(&id)?)).await
}

async fn user(
    State(reader): State<CacheReader>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    value(&reader, keys::user(snowflake(&id)?)).await
}

async fn member(
    State(reader): State<CacheReader>,
    Path((guild, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    value(&reader, keys::member(snowflake(&guild)?, snowflake(&user)?)).await
}

async fn stored_guild(reader: &CacheReader, id: u64) -> Result<crate::schema::Guild, ApiError> {
    reader
        .guild(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(keys::guild(id)))
}

/// A JSON array of the raw values of `keys` (keys without a value are left out).
async fn array(reader: &CacheReader, keys: Vec<String>) -> Result<Response, ApiError> {
    let values: Vec<Option<Bytes>> = futures_util::stream::iter(keys.into_iter().map(|key| {
        let reader = reader.clone();
        async move { reader.raw(&key).await }
    }))
    .buffered(32)
    .try_collect()
    .await?;
    let mut body =
        Vec::with_capacity(values.iter().flatten().map(|v| v.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, value) in values.iter().flatten().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(value);
    }
    body.push(b']');
    Ok(json(body.into()))
}

async fn channels(
    State(reader): State<CacheReader>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let guild = stored_guild(&reader, snowflake(&id)?).await?;
    let keys = guild
        .channel_ids
        .iter()
        .map(|c: &Id| keys::channel(c.0))
        .collect();
    array(&reader, keys).await
}

async fn roles(
    State(reader): State<CacheReader>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = snowflake(&id)?;
    let guild = stored_guild(&reader, id).await?;
    let keys = guild.role_ids.iter().map(|r| keys::role(id, r.0)).collect();
    array(&reader, keys).await
}

async fn member_ids(
    State(reader): State<CacheReader>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = snowflake(&id)?;
    stored_guild(&reader, id).await?;
    let ids: Vec<Id> = reader.member_ids(id).await?.into_iter().map(Id).collect();
    Ok(axum::Json(ids).into_response())
}

async fn counts(State(reader): State<CacheReader>) -> Result<Response, ApiError> {
    Ok(axum::Json(reader.counts().await?).into_response())
}
