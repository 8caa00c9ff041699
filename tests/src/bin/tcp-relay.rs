//! `tcp-relay LISTEN UPSTREAM`: the least any proxy can do. Accepts connections on `LISTEN` and
//! copies bytes both ways to a connection of its own to `UPSTREAM`, on one thread, with Nagle
//! off. The REST proxy bench sends the same requests through it, so "added by a loopback hop"
//! is measured beside "added by the proxy" in the same run.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tcp-relay LISTEN_ADDR UPSTREAM_ADDR";
    let listen: SocketAddr = args.next().context(usage)?.parse().context(usage)?;
    let upstream: SocketAddr = args.next().context(usage)?.parse().context(usage)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            loop {
                let (mut client, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        })
}
