//! The Rust handshake and the JavaScript one (web/src/handshake.js, run by
//! Node) complete a handshake with each other, in both roles. Needs web/'s
//! npm dependencies (scripts/test.sh runs `npm ci` there).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use tallow_peer::{HandshakeError, Initiator, Message, Randomness, Responder};

struct Js {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Js {
    fn spawn(role: &str, code: &str, sid: &str) -> Js {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/tools/interop-peer.mjs");
        let mut child = Command::new("node")
            .args([script, role, code, sid])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (and `npm ci` in web/)");
        let out = BufReader::new(child.stdout.take().unwrap());
        Js { child, out }
    }

    fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("JSON from node: {line:?}"))
    }

    fn recv_msg(&mut self) -> Message {
        let v = self.recv();
        assert_ne!(v["t"], "error", "{v}");
        serde_json::from_value(v).unwrap()
    }

    fn send(&mut self, m: &Message) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", m.to_json()).unwrap();
    }
}

impl Drop for Js {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CODE: &str = "42-cedar-otter-plum";
const SID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[test]
fn javascript_initiator_and_rust_responder() {
    let mut js = Js::spawn("A", CODE, SID);
    let hello = js.recv_msg();
    let (b, reply) = Responder::respond(CODE, SID, &hello, &Randomness::fresh()).unwrap();
    js.send(&reply);
    let mut session = b.finish(&js.recv_msg()).unwrap();
    assert_eq!(session.open(&js.recv_msg()).unwrap(), b"from js A");
    js.send(&session.seal(b"from rust B"));
    let done = js.recv();
    assert_eq!(done["got"], "from rust B");
    assert_eq!(
        done["words"],
        serde_json::json!(session.verification_words())
    );
}

#[test]
fn rust_initiator_and_javascript_responder() {
    let mut js = Js::spawn("B", CODE, SID);
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    js.send(&hello);
    let (mut session, confirm) = a.finish(&js.recv_msg()).unwrap();
    js.send(&confirm);
    assert_eq!(session.open(&js.recv_msg()).unwrap(), b"from js B");
    js.send(&session.seal(b"from rust A"));
    let done = js.recv();
    assert_eq!(done["got"], "from rust A");
    assert_eq!(
        done["words"],
        serde_json::json!(session.verification_words())
    );
}

#[test]
fn a_wrong_code_fails_across_languages() {
    let mut js = Js::spawn("B", "42-cedar-otter-plus", SID);
    let (a, hello) = Initiator::start(CODE, SID, &Randomness::fresh()).unwrap();
    js.send(&hello);
    let reply = js.recv_msg();
    assert!(matches!(
        a.finish(&reply),
        Err(HandshakeError::ConfirmationFailed)
    ));
}
