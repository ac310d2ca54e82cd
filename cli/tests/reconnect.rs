//! A session whose peer connection breaks comes back on a new epoch with a
//! new data key, whichever side breaks, and records flow again both ways.
//! Real tallow-server, real webrtc-rs connections on loopback.

use std::time::Duration;

use clap::Parser;
use tallow_cli::channel::Incoming;
use tallow_cli::session::{self, Connected, Options};
use tallow_cli::ws;
use tallow_peer::RecordType;
use tallow_signaling::config::Config;
use tallow_signaling::server::Server;

async fn server() -> Server {
    let cfg = Config::try_parse_from([
        "tallow-server",
        "--listen",
        "127.0.0.1:0",
        "--turn-enabled",
        "false",
    ])
    .expect("flags parse");
    Server::start(cfg).await.expect("server starts")
}

fn opts() -> Options {
    Options {
        relay_only: false,
        bind: "127.0.0.1:0".into(),
    }
}

async fn pair(url: &str) -> (Connected, Connected) {
    let (code_tx, code_rx) = tokio::sync::oneshot::channel();
    let a_sig = ws::connect(url).await.unwrap();
    let a = tokio::spawn(async move {
        session::create(a_sig, &opts(), |code| {
            let _ = code_tx.send(code.to_owned());
        })
        .await
    });
    let code = code_rx.await.unwrap();
    let b_sig = ws::connect(url).await.unwrap();
    let b = session::join(b_sig, &code, &opts()).await.unwrap();
    let a = a.await.unwrap().unwrap();
    assert_eq!(a.words, b.words);
    (a, b)
}

async fn says(from: &mut Connected, to: &mut Connected, what: &str) {
    from.link
        .send(RecordType::Control, what.as_bytes())
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), to.link.recv())
        .await
        .expect("a record within 10 s")
        .unwrap()
    {
        Incoming::Control(got) => assert_eq!(got, what.as_bytes()),
        Incoming::Data(_) => panic!("a data record"),
    }
}

/// The side whose link is still up notices only when its channel closes.
async fn notices_the_break(c: &mut Connected) {
    let r = tokio::time::timeout(Duration::from_secs(30), c.link.recv())
        .await
        .expect("the old channel closes within 30 s");
    assert!(r.is_err(), "the old link should end");
}

async fn both_reconnect(a: &mut Connected, b: &mut Connected) {
    let (ra, rb) = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join(a.reconnect(), b.reconnect()),
    )
    .await
    .expect("reconnected within 60 s");
    ra.unwrap();
    rb.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_creator_breaking_its_connection_gets_a_new_epoch() {
    let server = server().await;
    let url = format!("ws://{}/signal", server.local_addr());
    let (mut a, mut b) = pair(&url).await;
    says(&mut a, &mut b, "before").await;
    a.pc.close().await.unwrap();
    let (ra, ()) = futures_util::future::join(a.reconnect(), notices_the_break(&mut b)).await;
    ra.unwrap();
    tokio::time::timeout(Duration::from_secs(30), b.reconnect())
        .await
        .expect("the joiner takes the new connection")
        .unwrap();
    assert_eq!((a.epoch, b.epoch), (2, 2));
    says(&mut a, &mut b, "after, a to b").await;
    says(&mut b, &mut a, "after, b to a").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_joiner_breaking_its_connection_makes_the_creator_offer_again() {
    let server = server().await;
    let url = format!("ws://{}/signal", server.local_addr());
    let (mut a, mut b) = pair(&url).await;
    says(&mut b, &mut a, "before").await;
    b.pc.close().await.unwrap();
    notices_the_break(&mut a).await;
    both_reconnect(&mut a, &mut b).await;
    assert_eq!((a.epoch, b.epoch), (2, 2));
    says(&mut a, &mut b, "after").await;
    // And a second break on the new epoch.
    a.pc.close().await.unwrap();
    notices_the_break(&mut b).await;
    both_reconnect(&mut a, &mut b).await;
    assert_eq!((a.epoch, b.epoch), (3, 3));
    says(&mut b, &mut a, "third").await;
}

/// A TCP proxy in front of the server whose live connections can be cut
/// (new ones are still accepted), as a dropped Wi-Fi or NAT rebinding does.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u32>,
    stall: tokio::sync::watch::Sender<u32>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Proxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(0u32);
        let (stall, stall_rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                let (mut cut, mut stall) = (cut_rx.clone(), stall_rx.clone());
                cut.mark_unchanged();
                stall.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                        // Nothing moves, nothing closes: a path gone silent.
                        _ = stall.changed() => {
                            tokio::time::sleep(Duration::from_secs(120)).await;
                        }
                    }
                });
            }
        });
        Proxy { addr, cut, stall }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn stall_all(&self) {
        self.stall.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signaling_gone_silent_is_noticed_and_resumed() {
    // Pings every second: a client hears nothing for 2 pings and 5 s and
    // takes its connection for dead (TCP would not say so for minutes).
    let cfg = Config::try_parse_from([
        "tallow-server",
        "--listen",
        "127.0.0.1:0",
        "--turn-enabled",
        "false",
        "--ping-interval-secs",
        "1",
        "--idle-timeout-secs",
        "3",
    ])
    .expect("flags parse");
    let server = Server::start(cfg).await.expect("server starts");
    let proxy = Proxy::start(server.local_addr()).await;
    let url = format!("ws://{}/signal", proxy.addr);
    let (mut a, mut b) = pair(&url).await;
    proxy.stall_all();
    // Long enough for both to notice (7 s) and resume.
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.pc.close().await.unwrap();
    notices_the_break(&mut b).await;
    both_reconnect(&mut a, &mut b).await;
    assert_eq!((a.epoch, b.epoch), (2, 2));
    says(&mut b, &mut a, "after").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signaling_cut_mid_session_is_resumed_and_still_carries_a_reconnect() {
    let server = server().await;
    let proxy = Proxy::start(server.local_addr()).await;
    let url = format!("ws://{}/signal", proxy.addr);
    let (mut a, mut b) = pair(&url).await;
    says(&mut a, &mut b, "before").await;
    // Both signaling connections drop; the data channel does not care.
    proxy.cut_all();
    says(&mut b, &mut a, "while signaling is down").await;
    // Give both clients a moment to redial and resume their seats, then
    // break the peer connection: the new epoch's offer, answer and
    // candidates can only travel over the resumed seats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.pc.close().await.unwrap();
    notices_the_break(&mut a).await;
    both_reconnect(&mut a, &mut b).await;
    assert_eq!((a.epoch, b.epoch), (2, 2));
    says(&mut a, &mut b, "after").await;
}
