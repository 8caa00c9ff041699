//! `shardyard rest`: the REST proxy in front of Discord's API, sharing its rate limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shardyard_protocol::Token;
use shardyard_protocol::names::BotKey;
use shardyard_rest::cluster::ClusterConfig;
use shardyard_rest::proxy::{DEFAULT_UPSTREAM, ProxyConfig};

/// Flags of `shardyard rest`; `--listen`, `--upstream`, `--nats` and `--admin-addr` are an exact
/// interface.
#[derive(Debug, Args)]
pub(crate) struct RestArgs {
    /// Where clients connect (they use `http://ADDR/api` as Discord's API base).
    #[arg(long, env = "SHARDYARD_REST_LISTEN")]
    listen: SocketAddr,
    /// Discord's API base, without the version.
    #[arg(long, env = "SHARDYARD_REST_UPSTREAM", default_value = DEFAULT_UPSTREAM)]
    upstream: String,
    /// NATS server URL: replicas of the bot find each other there and share its rate limits
    /// (each token's limits are kept by one replica; the others ask it for permits). Needs
    /// `--bot`.
    #[arg(long, env = "SHARDYARD_NATS_URL")]
    nats: Option<String>,
    /// The bot's key (`namespace_name` under Kubernetes, the manifest name locally): replicas
    /// of one bot meet on `shardyard.<bot>.rest.members`.
    #[arg(long, env = "SHARDYARD_BOT")]
    bot: Option<BotKey>,
    /// With `--nats`: the `http://host:port` where the other replicas reach this one's
    /// listener. Default: `--listen`'s address, or, when that is 0.0.0.0/::, the address this
    /// host reaches NATS from (a pod's IP).
    #[arg(long, env = "SHARDYARD_REST_ADVERTISE")]
    advertise: Option<String>,
    /// With `--nats`: this replica's id among the bot's replicas, which decides the tokens it
    /// keeps. It must be unique while the replica lives (a pod's name is). Default:
    /// `$HOSTNAME-<pid>-<random>`.
    #[arg(long, env = "SHARDYARD_REST_REPLICA_ID", value_parser = replica_id)]
    replica_id: Option<String>,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    #[arg(long, env = "SHARDYARD_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// A file holding the bot token (else `SHARDYARD_TOKEN`; without either, clients must send
    /// their own `Authorization`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Requests per second per token (Discord's global limit).
    #[arg(long, env = "SHARDYARD_REST_GLOBAL_PER_SECOND", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    global_per_second: u32,
    /// Invalid requests (401, 403, 429) per 10 minutes at which every request is refused
    /// locally (503); Cloudflare bans the IP at 10,000.
    #[arg(long, env = "SHARDYARD_REST_INVALID_REQUEST_LINE", default_value_t = 8_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    invalid_request_line: u32,
    /// How long (seconds) a request may wait for the rate limit unless it says otherwise with
    /// `X-Shardyard-Max-Wait`; past it the proxy answers 429 itself.
    #[arg(long, env = "SHARDYARD_REST_MAX_WAIT", default_value_t = 30.0)]
    max_wait: f64,
    /// The longest (seconds) a local 429 (or 503 at the invalid-request line) is held before
    /// it is answered, never past its retry-after or the request's wait budget: a client that
    /// re-sends refused requests at once is paced by it. 0 answers refusals at once.
    #[arg(long, env = "SHARDYARD_REST_REFUSAL_HOLD", default_value_t = 1.0)]
    refusal_hold: f64,
    /// Seconds an upstream request may take until its whole answer is in (then 504).
    #[arg(long, env = "SHARDYARD_REST_UPSTREAM_TIMEOUT", default_value_t = 30.0)]
    upstream_timeout: f64,
    /// Retries of GET, PUT and DELETE after an upstream connection error or 5xx.
    #[arg(long, env = "SHARDYARD_REST_UPSTREAM_RETRIES", default_value_t = 2)]
    upstream_retries: u32,
    /// The largest multipart (file upload) body, in bytes (Discord's default upload limit).
    #[arg(long, env = "SHARDYARD_REST_MAX_UPLOAD_BYTES", default_value_t = 25 * 1024 * 1024)]
    max_upload_bytes: usize,
    /// The largest body of any other type (JSON), in bytes.
    #[arg(long, env = "SHARDYARD_REST_MAX_JSON_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_json_bytes: usize,
    /// Distinct client tokens (their own `Authorization`) the proxy keeps limits for.
    #[arg(long, env = "SHARDYARD_REST_MAX_TOKENS", default_value_t = 1024)]
    max_tokens: usize,
    /// Let a bucket's remaining requests go at once instead of one after the other's answer:
    /// more throughput per bucket, but requests of a bucket may then reach Discord out of order.
    #[arg(long, env = "SHARDYARD_REST_UNORDERED_BUCKETS")]
    unordered_buckets: bool,
    /// Threads serving requests; 1 (the default) is a current-thread runtime.
    #[arg(long, env = "SHARDYARD_REST_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && value >= 0.0,
        "{name} must be a number of seconds, 0 or more"
    );
    Duration::try_from_secs_f64(value).with_context(|| format!("{name} is too large"))
}

impl RestArgs {
    fn into_config(self) -> anyhow::Result<ProxyConfig> {
        let Self {
            listen,
            upstream,
            nats,
            bot,
            advertise,
            replica_id,
            admin_addr,
            token_file,
            global_per_second,
            invalid_request_line,
            max_wait,
            refusal_hold,
            upstream_timeout,
            upstream_retries,
            max_upload_bytes,
            max_json_bytes,
            max_tokens,
            unordered_buckets,
            threads: _,
        } = self;
        let token = match token_file {
            Some(path) => Some(Token::new(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the token file {}", path.display()))?,
            )),
            None => std::env::var("SHARDYARD_TOKEN")
                .ok()
                .map(|raw| Token::new(&raw)),
        }
        .filter(|token| !token.is_empty());
        let mut config = ProxyConfig::new(listen);
        config.upstream = upstream;
        config.token = token;
        config.admin_addr = admin_addr;
        config.limits.global_per_second = global_per_second;
        config.limits.invalid_request_line = invalid_request_line;
        config.limits.default_max_wait = Some(seconds("--max-wait", max_wait)?);
        config.limits.sequential_buckets = !unordered_buckets;
        config.refusal_hold = seconds("--refusal-hold", refusal_hold)?;
        config.upstream_timeout = seconds("--upstream-timeout", upstream_timeout)?;
        config.upstream_retries = upstream_retries;
        config.max_upload_bytes = max_upload_bytes;
        config.max_json_bytes = max_json_bytes;
        config.max_tokens = max_tokens;
        config.cluster = match (nats, bot) {
            (Some(nats_url), Some(bot)) => {
                let url = match advertise {
                    Some(url) => url.trim_end_matches('/').to_owned(),
                    None => format!("http://{}", advertise_addr(listen, &nats_url)?),
                };
                Some(ClusterConfig {
                    nats_url,
                    bot,
                    id: replica_id.unwrap_or_else(ClusterConfig::random_id),
                    url,
                })
            }
            (Some(_), None) => anyhow::bail!("--nats needs --bot (SHARDYARD_BOT)"),
            (None, _) => None,
        };
        Ok(config)
    }
}

/// A replica id: 1 to 128 characters of letters, digits, `-`, `_` and `.`.
fn replica_id(id: &str) -> Result<String, String> {
    let fits = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(id.to_owned())
    } else {
        Err("1 to 128 letters, digits, '-', '_' or '.'".to_owned())
    }
}

/// Where the other replicas reach `listen`: itself, or when it is a wildcard, the local address
/// of a route to the (first) NATS server, which peers reaching the same NATS can reach too.
fn advertise_addr(listen: SocketAddr, nats_url: &str) -> anyhow::Result<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let first = nats_url.split(',').next().unwrap_or_default().trim();
    let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host_port = without_scheme
        .rsplit_once('@')
        .map_or(without_scheme, |(_, rest)| rest)
        .trim_end_matches('/');
    let target = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !host_port.ends_with(']')
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:4222")
    };
    let remote = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .with_context(|| format!("resolving the NATS host of {target:?} (or set --advertise)"))?
        .next()
        .with_context(|| format!("no address for {target:?} (or set --advertise)"))?;
    let local: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = std::net::UdpSocket::bind(local).context("finding this host's address")?;
    socket
        .connect(remote)
        .context("finding this host's address towards NATS (or set --advertise)")?;
    Ok(SocketAddr::new(socket.local_addr()?.ip(), listen.port()))
}

pub(crate) fn run(args: RestArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime::build(args.threads)?;
    let config = args.into_config()?;
    runtime.block_on(async move {
        if let Some(cluster) = &config.cluster {
            tracing::info!(
                replica = %cluster.id,
                advertise = %cluster.url,
                bot = %cluster.bot,
                "sharing rate limits with the bot's other replicas through NATS"
            );
        }
        if config.token.is_none() {
            tracing::warn!(
                "no bot token (SHARDYARD_TOKEN or --token-file): requests without their own \
                 Authorization are refused"
            );
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            stop.cancel();
        });
        shardyard_rest::run(config, shutdown)
            .await
            .context("running the REST proxy")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        rest: RestArgs,
    }

    #[test]
    fn nats_without_a_bot_is_refused() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["rest", "--listen", "127.0.0.1:1", "--nats", "nats://x:1"])
            .unwrap();
        let error = cli.rest.into_config().unwrap_err().to_string();
        assert!(error.contains("--bot"), "{error}");
        let cli = Cli::try_parse_from([
            "rest",
            "--listen",
            "127.0.0.1:1",
            "--nats",
            "nats://x:1",
            "--bot",
            "mybot",
            "--advertise",
            "http://10.1.2.3:8080/",
        ])
        .unwrap();
        let cluster = cli.rest.into_config().unwrap().cluster.unwrap();
        assert_eq!(cluster.url, "http://10.1.2.3:8080");
        assert_eq!(cluster.bot.as_str(), "mybot");
        assert_eq!(cluster.nats_url, "nats://x:1");
    }

    #[test]
    fn refusals_are_held_a_second_unless_told_otherwise() {
        use clap::Parser as _;
        let parse = |extra: &[&str]| {
            let mut args = vec!["rest", "--listen", "127.0.0.1:1"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap().rest.into_config()
        };
        assert_eq!(parse(&[]).unwrap().refusal_hold, Duration::from_secs(1));
        assert_eq!(
            parse(&["--refusal-hold", "0.25"]).unwrap().refusal_hold,
            Duration::from_millis(250)
        );
        assert_eq!(
            parse(&["--refusal-hold", "0"]).unwrap().refusal_hold,
            Duration::ZERO
        );
        let error = parse(&["--refusal-hold=-1"]).unwrap_err().to_string();
        assert!(error.contains("--refusal-hold"), "{error}");
    }

    #[test]
    fn replicas_advertise_a_reachable_address() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(advertise_addr(listen, "nats://nowhere:1").unwrap(), listen);
        let wildcard: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        for nats in [
            "nats://127.0.0.1:4222",
            "127.0.0.1",
            "nats://user:pass@127.0.0.1:4333/,nats://10.0.0.1:4222",
        ] {
            assert_eq!(
                advertise_addr(wildcard, nats).unwrap(),
                "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                "{nats}"
            );
        }
    }
}
