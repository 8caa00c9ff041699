//! The admin endpoints every shardyard service serves (`/healthz`, `/readyz`, `/metrics`),
//! read the same way for each process the harness starts.

use std::net::SocketAddr;
use std::sync::OnceLock;

/// One HTTP client for every admin request of the test process.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        crate::install_crypto_provider();
        reqwest::Client::new()
    })
}

/// GET `path` on the admin server at `admin`; the body on 2xx.
///
/// # Errors
/// On a non-2xx status (with the body) or no answer.
pub async fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let response = client().get(format!("http://{admin}{path}")).send().await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
    Ok(body)
}

/// The value of the series whose line starts with `series` (name and labels as printed, e.g.
/// `shardyard_rest_rate_limited_total{scope="user"}`) in a `/metrics` text; `None` when absent.
#[must_use]
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn finds_a_series_by_name_and_labels_only() {
        let text = "# HELP a_total A.\na_total{x=\"1\"} 3\na_total{x=\"10\"} 7\nb 2.5\n";
        assert_eq!(metric_value(text, "a_total{x=\"1\"}"), Some(3.0));
        assert_eq!(metric_value(text, "a_total{x=\"10\"}"), Some(7.0));
        assert_eq!(metric_value(text, "b"), Some(2.5));
        assert_eq!(metric_value(text, "a_total"), None);
    }
}
