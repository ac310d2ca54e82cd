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
