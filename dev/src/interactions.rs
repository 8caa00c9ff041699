//! `spec.interactions` with the simulator in Discord's place. The simulated application plays
//! the part of the bot's real one:
//!
//! - its public key (`verify_key` of `GET /applications/@me`, read with the simulator's token)
//!   is the value of the Secret the manifest names in `spec.interactions.publicKeySecret`, as
//!   the sim token is the value of the token Secret;
//! - once the endpoint's local Service has a ready process behind it, the application's
//!   Interactions Endpoint URL is pointed at it (`PATCH /applications/@me
//!   {"interactions_endpoint_url": "http://<service>/interactions"}`, which runs Discord's check
//!   of the endpoint), tried again each reconcile until the simulator takes it, and again
//!   whenever the address is another one (the simulator restarted, say);
//! - a manifest without `spec.interactions` clears it (`null`): interactions go back to the
//!   gateway.
//!
//! With real Discord dev changes nothing of the application: Discord reaches the endpoint only
//! over HTTPS at an address of its choosing, which is the author's to set up.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use shardyard_protocol::{Token, error_chain};
use tokio::task::JoinHandle;

/// How long a request to the simulator may take. `PATCH` checks the endpoint with two signed
/// requests of up to 3 s each before it answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Interactions Endpoint URL of an endpoint whose Service is at `addr`.
#[must_use]
pub fn endpoint_url(addr: SocketAddr) -> String {
    format!("http://{addr}/interactions")
}

/// What the plan and the processes say the simulator should do with interactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// No `spec.interactions`: over the gateway.
    Gateway,
    /// `spec.interactions`, but no endpoint process is ready behind its Service yet.
    NotReady,
    /// `spec.interactions` with a ready endpoint at this URL.
    Endpoint(String),
}

/// What to ask the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing now.
    Nothing,
    /// Set the URL.
    Point(String),
    /// Clear it.
    Clear,
}

/// The step from what is wanted and the URL the simulator has, as far as dev knows (`None`:
/// none set). An endpoint that is not ready yet is waited for, even when the simulator still
/// has an older address: pointing it needs a ready endpoint, and clearing it would only move
/// the interactions to the gateway for a moment.
#[must_use]
pub fn step(wanted: &Wanted, pointed: Option<&str>) -> Step {
    match (wanted, pointed) {
        (Wanted::Gateway, Some(_)) => Step::Clear,
        (Wanted::Endpoint(url), pointed) if pointed != Some(url.as_str()) => {
            Step::Point(url.clone())
        }
        _ => Step::Nothing,
    }
}

/// The application's public key from `GET /applications/@me`'s answer: 64 hex digits.
///
/// # Errors
/// When the answer has no such `verify_key`.
pub fn verify_key(application: &Value) -> Result<String, String> {
    let key = application["verify_key"]
        .as_str()
        .ok_or_else(|| "the application has no verify_key".to_owned())?;
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(key.to_ascii_lowercase())
    } else {
        Err(format!(
            "its verify_key {key:?} is not an Ed25519 public key (64 hex digits)"
        ))
    }
}

/// The simulated application, as dev keeps it in step with the manifest.
pub struct SimApplication {
    http: reqwest::Client,
    api_base: String,
    token: Token,
    verify_key: Option<String>,
    /// The URL the simulator has, as far as dev knows.
    pointed: Option<String>,
    /// A `PATCH` setting this URL, under way.
    pointing: Option<(String, JoinHandle<Result<(), String>>)>,
    /// The last failure said, so that a retry failing the same way is not said again.
    last_failure: Option<String>,
}

impl std::fmt::Debug for SimApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimApplication")
            .field("api_base", &self.api_base)
            .field("pointed", &self.pointed)
            .finish_non_exhaustive()
    }
}

impl SimApplication {
    /// The application of `token` at the simulator's `api_base` (with its version).
    #[must_use]
    pub fn new(http: reqwest::Client, api_base: &str, token: Token) -> Self {
        Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            token,
            verify_key: None,
            pointed: None,
            pointing: None,
            last_failure: None,
        }
    }

    /// The application's public key, asked once (until it is had).
    ///
    /// # Errors
    /// Why it could not be read (never with the token).
    pub async fn public_key(&mut self) -> Result<String, String> {
        if let Some(key) = &self.verify_key {
            return Ok(key.clone());
        }
        let answer = self
            .request(reqwest::Method::GET, None)
            .await
            .map_err(|e| format!("GET {}/applications/@me: {e}", self.api_base))?;
        let key = verify_key(&answer)?;
        self.verify_key = Some(key.clone());
        Ok(key)
    }

    /// The simulator was restarted: a new world, with no URL set.
    pub fn forget(&mut self) {
        self.pointed = None;
        if let Some((_, task)) = self.pointing.take() {
            task.abort();
        }
    }

    /// One reconcile's worth: takes the answer of a `PATCH` under way, clears the URL at once
    /// when interactions go back to the gateway, and starts setting it (in the background:
    /// the simulator checks the endpoint first) when it should be another. Returns what to
    /// tell the user.
    pub async fn sync(&mut self, wanted: &Wanted) -> Vec<String> {
        let mut said = Vec::new();
        if let Some((url, task)) = self.pointing.take_if(|(_, task)| task.is_finished()) {
            match task.await {
                Ok(Ok(())) => {
                    said.push(format!(
                        "interactions: the simulator sends them to {url} (POST /_sim/interactions \
                         tries one)"
                    ));
                    self.pointed = Some(url);
                    self.last_failure = None;
                }
                Ok(Err(reason)) => self.failed(&mut said, &reason),
                Err(_) => {}
            }
        }
        if *wanted == Wanted::Gateway
            && let Some((_, task)) = self.pointing.take()
        {
            // The PATCH may have landed: clear whatever it did.
            task.abort();
            self.pointed = Some(String::new());
        }
        match step(wanted, self.pointed.as_deref()) {
            Step::Nothing => {}
            Step::Clear => {
                match self
                    .request(
                        reqwest::Method::PATCH,
                        Some(json!({"interactions_endpoint_url": null})),
                    )
                    .await
                {
                    Ok(_) => {
                        said.push(
                            "interactions: spec.interactions is gone, so the simulator sends \
                             them over the gateway again"
                                .to_owned(),
                        );
                        self.pointed = None;
                        self.last_failure = None;
                    }
                    Err(reason) => self.failed(
                        &mut said,
                        &format!("clearing the simulator's interactions endpoint URL: {reason}"),
                    ),
                }
            }
            Step::Point(url) => {
                if self.pointing.as_ref().is_none_or(|(at, _)| *at != url) {
                    if let Some((_, task)) = self.pointing.take() {
                        task.abort();
                    }
                    let request = self.patch(&url);
                    let task = tokio::spawn(async move {
                        request
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("pointing the simulator at {e}"))
                    });
                    self.pointing = Some((url, task));
                }
            }
        }
        said
    }

    fn failed(&mut self, said: &mut Vec<String>, reason: &str) {
        if self.last_failure.as_deref() != Some(reason) {
            said.push(format!("interactions: {reason}; tried again each second"));
            self.last_failure = Some(reason.to_owned());
        }
    }

    /// `PATCH /applications/@me` setting `url`, as a future that owns what it needs. Its
    /// error starts with the URL.
    fn patch(&self, url: &str) -> impl Future<Output = Result<Value, String>> + Send + 'static {
        let request = self.build(
            reqwest::Method::PATCH,
            Some(json!({"interactions_endpoint_url": url})),
        );
        let url = url.to_owned();
        async move { send(request).await.map_err(|e| format!("{url}: {e}")) }
    }

    async fn request(&self, method: reqwest::Method, body: Option<Value>) -> Result<Value, String> {
        send(self.build(method, body)).await
    }

    fn build(&self, method: reqwest::Method, body: Option<Value>) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}/applications/@me", self.api_base))
            .header(reqwest::header::AUTHORIZATION, self.token.authorization())
            .timeout(REQUEST_TIMEOUT);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    }
}

/// Sends `request`; the JSON answer, or why not: the status and the simulator's body (neither
/// holds the token; reqwest's errors name the URL, which holds none either).
async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| error_chain(&e))?;
    if !status.is_success() {
        return Err(format!("the simulator answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("an answer that is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:4000/interactions";

    #[test]
    fn the_url_is_pointed_once_ready_again_when_it_moves_and_cleared_without_the_spec() {
        let at = |url: &str| Wanted::Endpoint(url.to_owned());
        // Not ready: wait, whatever the simulator has.
        assert_eq!(step(&Wanted::NotReady, None), Step::Nothing);
        assert_eq!(step(&Wanted::NotReady, Some(URL)), Step::Nothing);
        // Ready: pointed, then left alone.
        assert_eq!(step(&at(URL), None), Step::Point(URL.to_owned()));
        assert_eq!(step(&at(URL), Some(URL)), Step::Nothing);
        // Another address: pointed again.
        let moved = "http://127.0.0.1:4001/interactions";
        assert_eq!(step(&at(moved), Some(URL)), Step::Point(moved.to_owned()));
        // No spec.interactions: cleared if set, else nothing.
        assert_eq!(step(&Wanted::Gateway, Some(URL)), Step::Clear);
        assert_eq!(step(&Wanted::Gateway, Some("")), Step::Clear);
        assert_eq!(step(&Wanted::Gateway, None), Step::Nothing);
    }

    #[test]
    fn the_url_names_the_service_and_the_discord_path() {
        assert_eq!(
            endpoint_url("127.0.0.1:4000".parse().unwrap()),
            "http://127.0.0.1:4000/interactions"
        );
    }

    #[test]
    fn the_verify_key_is_64_hex_digits() {
        let key = "AB".repeat(32);
        assert_eq!(verify_key(&json!({"verify_key": key})), Ok("ab".repeat(32)));
        assert!(verify_key(&json!({"id": "1"})).is_err());
        assert!(verify_key(&json!({"verify_key": "abc"})).is_err());
        assert!(verify_key(&json!({"verify_key": "zz".repeat(32)})).is_err());
    }
}
