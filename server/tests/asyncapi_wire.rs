//! Real messages against the AsyncAPI document the server serves (`/asyncapi.json`): every text
//! frame two phones receive over real WebSockets, every frame they send, and every message
//! captured on the real NATS bus during a distributed session (with the replies to its
//! requests) fit the schema their `type` or subject names, with the headers it declares.
//! `asyncapi.rs` checks the document itself and values built from the Rust types.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::asyncapi::Contract;
use common::audio::{load_model, model_dir, pcm, voice, wav};
use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use futures::StreamExt;
use inside_schemas::{ClientMessageType, ServerMessageType, SubjectKind};
use serde_json::{json, Value};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);
/// How long a socket stays silent before it is taken to have said everything.
const QUIET: Duration = Duration::from_millis(500);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

/// What the phones of one test sent and received, by message type: every one was checked.
#[derive(Default)]
struct Tally {
    received: Mutex<BTreeMap<&'static str, usize>>,
    sent: Mutex<BTreeMap<&'static str, usize>>,
}

impl Tally {
    fn count(map: &Mutex<BTreeMap<&'static str, usize>>, kind: &'static str) {
        *map.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn total(map: &Mutex<BTreeMap<&'static str, usize>>) -> usize {
        map.lock().unwrap().values().sum()
    }
}

/// A phone's socket whose every text frame, both ways, is held to the document.
struct Phone<'t> {
    ws: Ws,
    contract: &'t Contract,
    tally: &'t Tally,
}

impl<'t> Phone<'t> {
    /// Connects (resuming after `since` when given) and takes the `server.joined` that comes
    /// first.
    async fn connect(
        contract: &'t Contract,
        tally: &'t Tally,
        api: &Api,
        sid: &str,
        pair: &Value,
        since: Option<u64>,
    ) -> Phone<'t> {
        let ws = match since {
            Some(since) => Ws::resume(api.addr, sid, token(pair), since).await,
            None => Ws::connect(api.addr, sid, token(pair)).await,
        };
        let mut phone = Phone {
            ws,
            contract,
            tally,
        };
        let first = phone.next(T).await.expect("server.joined");
        assert_eq!(first["type"], "server.joined", "{first}");
        phone
    }

    /// Sends `kind` once the document has accepted it.
    async fn send(&mut self, kind: ClientMessageType, payload: Value) {
        let msg = json!({"type": kind.as_str(), "sid": self.ws.sid, "payload": payload});
        assert_eq!(self.contract.check_client(&msg), kind);
        Tally::count(&self.tally.sent, kind.as_str());
        self.ws.send_text(&msg.to_string()).await;
    }

    async fn frame(&mut self, speaking_rate: f64, seq: i64) {
        self.send(
            ClientMessageType::FeatureFrame,
            json!({"timestamp_ms": 1000 + seq, "speaking_rate": speaking_rate, "overlap_ratio": 0.1, "seq": seq}),
        )
        .await;
    }

    /// Sends `text`, which the document refuses as the gateway does, and returns the
    /// `server.error` it gets.
    async fn send_refused(&mut self, text: &str) -> Value {
        assert!(
            !self.contract.accepts_client_text(text),
            "the document accepts {text}"
        );
        self.ws.send_text(text).await;
        self.expect(ServerMessageType::Error, T).await
    }

    /// 3 s of voice A as one `pcm_s16le` stream: two segments.
    async fn stream_voice(&mut self) {
        self.send(
            ClientMessageType::AudioStart,
            json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
        )
        .await;
        for chunk in pcm(&voice(0, 3.0)).chunks(3200) {
            self.ws.send_binary(chunk).await;
        }
        self.send(ClientMessageType::AudioStop, json!({})).await;
    }

    /// The next text frame, checked against the document; `None` at a close or after
    /// `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let msg = timeout_at(deadline, self.ws.stream.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("a text frame that is not JSON ({e}): {text}"));
                    let kind = self.contract.check_server(&value);
                    Tally::count(&self.tally.received, kind.as_str());
                    return Some(value);
                }
                Message::Binary(_) => {
                    panic!("a binary frame from the server: the document has none")
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next message of `kind`, the ones before it checked too.
    async fn expect(&mut self, kind: ServerMessageType, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(m) if m["type"] == kind.as_str() => return m,
                Some(_) => continue,
                None => panic!("no {kind} within {within:?}"),
            }
        }
    }

    /// Waits for a `server.session_state` naming `n` members.
    async fn expect_members(&mut self, n: usize) {
        loop {
            let m = self.expect(ServerMessageType::SessionState, T).await;
            if m["payload"]["participants"].as_array().unwrap().len() == n {
                return;
            }
        }
    }

    /// Checks whatever is left until the socket is quiet or closed.
    async fn drain(&mut self) {
        while self.next(QUIET).await.is_some() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_a_real_socket_receives_matches_asyncapi() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("ECAPA_MODEL_DIR", model_dir().as_str()),
            ("NUDGE_RATE_LIMIT_SECONDS", "0"),
            // a short history, so a resume after the first event gets `server.resync`
            ("WEBSOCKET_RESUME_EVENTS", "3"),
        ],
    )
    .await;
    let contract = Contract::fetch(&app).await;
    let tally = Tally::default();
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let mut pa = Phone::connect(&contract, &tally, &app, &sid, &a, None).await;
    let mut pb = Phone::connect(&contract, &tally, &app, &sid, &b, None).await;
    pa.expect_members(2).await;
    pb.expect_members(2).await;

    // over 3 syllables/s: a nudge per frame, more of them than the history keeps
    for seq in 1..=4 {
        pa.frame(6.0, seq).await;
        let nudge = pa.expect(ServerMessageType::Nudge, T).await;
        assert_eq!(nudge["payload"]["frame_seq"], seq, "{nudge}");
    }
    let (s, poke) = app
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "custom", "message": "thinking of you"}),
        )
        .await;
    assert_eq!(s, 201, "{poke}");
    let got = pb.expect(ServerMessageType::Poke, T).await;
    assert_eq!(got["payload"]["id"], poke["id"]);
    // the checks have teeth: formats are checked, and a payload is required
    let mut forged = got.clone();
    forged["payload"]["created_at"] = json!("yesterday");
    assert!(!contract.envelope_errors("server.poke", &forged).is_empty());
    forged.as_object_mut().unwrap().remove("payload");
    assert!(!contract.envelope_errors("server.poke", &forged).is_empty());

    pa.send(ClientMessageType::Ping, json!({})).await;
    let pong = pa.expect(ServerMessageType::Pong, T).await;
    assert_eq!(pong["payload"]["last_frame_seq"], 4, "{pong}");

    // what the gateway refuses, the document refuses too, and the errors fit it
    let refused = [
        ("{not json", "malformed_message"),
        (r#"{"type":"client.dance","payload":{}}"#, "unknown_type"),
        (
            r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1,"speaking_rate":1.0,"overlap_ratio":1.5}}"#,
            "invalid_frame",
        ),
        (
            r#"{"type":"client.audio_start","payload":{"codec":"aac"}}"#,
            "invalid_audio_start",
        ),
    ];
    for (text, code) in refused {
        let err = pa.send_refused(text).await;
        assert_eq!(err["payload"]["code"], code, "{text}: {err}");
    }
    pa.ws.send_binary(&[0u8; 10]).await;
    let err = pa.expect(ServerMessageType::Error, T).await;
    assert_eq!(err["payload"]["code"], "unexpected_binary", "{err}");

    // the committed small model attributes the stream: both phones hear who spoke
    pa.stream_voice().await;
    for p in [&mut pa, &mut pb] {
        let speaker = p.expect(ServerMessageType::Speaker, T).await;
        assert_eq!(speaker["payload"]["start_ms"], 0, "{speaker}");
        assert!(speaker["event_id"].is_u64(), "{speaker}");
    }

    // the events after the first are no longer all held
    let mut late = Phone::connect(&contract, &tally, &app, &sid, &a, Some(1)).await;
    let resync = late.expect(ServerMessageType::Resync, T).await;
    assert_eq!(resync["payload"]["reason"], "history_expired", "{resync}");

    for p in [&mut pa, &mut pb, &mut late] {
        p.drain().await;
    }
    let received = tally.received.lock().unwrap().clone();
    let sent = tally.sent.lock().unwrap().clone();
    println!(
        "checked {} messages received ({received:?}) and {} sent ({sent:?}); {} refused by \
         both the document and the gateway",
        Tally::total(&tally.received),
        Tally::total(&tally.sent),
        refused.len()
    );
    for kind in ServerMessageType::ALL {
        assert!(
            received.contains_key(kind.as_str()),
            "no {kind} was received"
        );
    }
    for kind in ClientMessageType::ALL {
        assert!(sent.contains_key(kind.as_str()), "no {kind} was sent");
    }
}

/// One message as the test's own NATS subscriber got it.
struct Captured {
    subject: String,
    reply: Option<String>,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
    /// On an inbox: the subject of the request it answers.
    answers: Option<String>,
    /// A status NATS itself sends (no responders, …), not Inside.
    status: bool,
}

impl Captured {
    fn of(msg: &async_nats::Message, answers: Option<String>) -> Captured {
        let headers = msg
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(name, values)| {
                let first = values.first().map(|v| v.as_str().to_string());
                (name.to_string(), first.unwrap_or_default())
            })
            .collect();
        Captured {
            subject: msg.subject.to_string(),
            reply: msg.reply.as_ref().map(|r| r.to_string()),
            headers,
            payload: msg.payload.to_vec(),
            answers,
            status: msg.status.is_some(),
        }
    }
}

/// Everything published under the test's prefix, and the replies to the requests among it.
struct Tap {
    client: async_nats::Client,
    got: Arc<Mutex<Vec<Captured>>>,
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

/// Inbox messages kept while their request may still be on its way to the tap (the two
/// subscriptions are read in no particular order); others' replies on the shared server
/// pass through.
const UNMATCHED_KEPT: usize = 1_000;

impl Tap {
    async fn start(prefix: &str) -> Tap {
        let client = async_nats::connect(NATS).await.unwrap();
        let ours = client.subscribe(format!("{prefix}.>")).await.unwrap();
        let inboxes = client.subscribe("_INBOX.>").await.unwrap();
        client.flush().await.unwrap();
        let (tx, count) = tokio::sync::watch::channel(0);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let under = format!("{prefix}.");
        let task = tokio::spawn(async move {
            // reply subject → the request's subject
            let mut asked: HashMap<String, String> = HashMap::new();
            let mut unmatched: VecDeque<async_nats::Message> = VecDeque::new();
            let mut all = futures::stream::select(ours, inboxes);
            while let Some(msg) = all.next().await {
                // a gateway's ordered consumer gets the events stream's copy of a nudge,
                // speaker event or poke on its inbox, under the original subject: already
                // captured as published
                if msg
                    .reply
                    .as_ref()
                    .is_some_and(|r| r.starts_with("$JS.ACK."))
                {
                    continue;
                }
                let mut captured = Vec::new();
                if msg.subject.starts_with(under.as_str()) {
                    if let Some(reply) = &msg.reply {
                        let reply = reply.to_string();
                        if let Some(i) = unmatched.iter().position(|m| m.subject.as_str() == reply)
                        {
                            let answer = unmatched.remove(i).unwrap();
                            captured.push(Captured::of(&msg, None));
                            captured.push(Captured::of(&answer, Some(msg.subject.to_string())));
                        } else {
                            asked.insert(reply, msg.subject.to_string());
                            captured.push(Captured::of(&msg, None));
                        }
                    } else {
                        captured.push(Captured::of(&msg, None));
                    }
                } else if let Some(request) = asked.remove(msg.subject.as_str()) {
                    captured.push(Captured::of(&msg, Some(request)));
                } else {
                    if unmatched.len() == UNMATCHED_KEPT {
                        unmatched.pop_front();
                    }
                    unmatched.push_back(msg);
                }
                if !captured.is_empty() {
                    let n = captured.len();
                    sink.lock().unwrap().extend(captured);
                    tx.send_modify(|c| *c += n);
                }
            }
        });
        Tap {
            client,
            got,
            count,
            task,
        }
    }

    /// Waits until `done` holds for what was captured; false after `within`.
    async fn wait_until(&self, within: Duration, done: impl Fn(&[Captured]) -> bool) -> bool {
        let mut count = self.count.clone();
        let deadline = Instant::now() + within;
        loop {
            if done(&self.got.lock().unwrap()) {
                return true;
            }
            if timeout_at(deadline, count.changed()).await.is_err() {
                return false;
            }
        }
    }

    /// Waits for `n` messages on `kind`'s subjects; panics after `T`.
    async fn expect(&self, contract: &Contract, prefix: &str, kind: SubjectKind, n: usize) {
        let enough = self
            .wait_until(T, |got| {
                got.iter()
                    .filter(|c| {
                        c.answers.is_none()
                            && contract.subject_kind(prefix, &c.subject) == Some(kind)
                    })
                    .count()
                    >= n
            })
            .await;
        assert!(enough, "fewer than {n} messages on {kind:?} within {T:?}");
    }

    fn stop(self) -> Vec<Captured> {
        self.task.abort();
        drop(self.client);
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

/// The requests whose replies the session gets (on the requester's inbox).
const REPLIED: &[SubjectKind] = &[
    SubjectKind::Embed,
    SubjectKind::Capabilities,
    SubjectKind::WorkerAudio,
];

async fn enrol(api: &Api, pair: &Value, wav: Vec<u8>) {
    let res = api.put_voiceprint(pair, wav).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_on_the_bus_matches_its_subject_schema() {
    let app = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("SPEAKER_MATCH_THRESHOLD", "-1"),
            ("NUDGE_RATE_LIMIT_SECONDS", "0"),
        ],
    )
    .await;
    let contract = Contract::fetch(&app).await;
    let prefix = app.env["NATS_SUBJECT_PREFIX"].clone();
    let tap = Tap::start(&prefix).await;
    let stop = CancellationToken::new();
    let model = Arc::new(load_model());
    // two workers: a segment taken by the one that does not own the session is forwarded
    let w1 = start_worker(&app.env, 1, Some(model.clone()), stop.clone()).await;
    let w2 = start_worker(&app.env, 1, Some(model), stop.clone()).await;

    let (a, b, rid) = app.couple().await;
    for u in [&a, &b] {
        app.set_research(&rid, u, "granted").await;
    }
    // enrolment on `embed`: a recording in the request, and one over the server's
    // max_payload, which travels through the uploads bucket (`Inside-Upload`)
    enrol(&app, &a, wav(&voice(0, 4.0))).await;
    let max_payload = tap.client.server_info().max_payload as f64;
    enrol(&app, &b, wav(&voice(1, max_payload / 32_000.0 + 2.0))).await;

    let sid = app.start_session(&a, &rid).await;
    let tally = Tally::default();
    let mut pa = Phone::connect(&contract, &tally, &app, &sid, &a, None).await;
    let mut pb = Phone::connect(&contract, &tally, &app, &sid, &b, None).await;
    pa.expect_members(2).await;
    pb.expect_members(2).await;

    pa.frame(6.0, 1).await;
    pa.expect(ServerMessageType::Nudge, T).await;
    let (s, poke) = app
        .post(
            "/v1/pokes",
            Some(token(&b)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 201, "{poke}");
    pa.expect(ServerMessageType::Poke, T).await;

    // The queue group hands each segment to either worker; the first one claims the session
    // and the other forwards what it takes. Streams go on until one segment was forwarded
    // (each further segment is a forward with even odds).
    let mut streams = 0;
    loop {
        pa.stream_voice().await;
        streams += 1;
        let forwarded = tap
            .wait_until(Duration::from_secs(3), |got| {
                got.iter().any(|c| {
                    contract.subject_kind(&prefix, &c.subject) == Some(SubjectKind::WorkerAudio)
                })
            })
            .await;
        if forwarded {
            break;
        }
        assert!(streams < 12, "no segment forwarded in {streams} streams");
    }
    for p in [&mut pa, &mut pb] {
        let speaker = p.expect(ServerMessageType::Speaker, T).await;
        assert_eq!(speaker["payload"]["user_id"], uid(&a), "{speaker}");
    }
    for kind in [
        SubjectKind::Derived,
        SubjectKind::ResearchDerived,
        SubjectKind::ResearchSpeakers,
    ] {
        tap.expect(&contract, &prefix, kind, 1).await;
    }
    pa.send(ClientMessageType::Ping, json!({})).await;
    pa.expect(ServerMessageType::Pong, T).await;

    // the finalize: the state and research state events, the report job on JetStream
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    for p in [&mut pa, &mut pb] {
        p.drain().await;
    }
    app.wait_report(&sid, token(&a)).await;
    tap.expect(&contract, &prefix, SubjectKind::ResearchState, 1)
        .await;
    tap.expect(&contract, &prefix, SubjectKind::ReportJobs, 1)
        .await;
    stop.cancel();
    w1.stopped().await;
    w2.stopped().await;
    let uploads = async_nats::jetstream::new(tap.client.clone());
    uploads
        .delete_object_store(inside_bus::Subjects::new(prefix.clone()).uploads_bucket())
        .await
        .ok();
    let captured = tap.stop();

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut headers_seen: HashMap<SubjectKind, BTreeSet<String>> = HashMap::new();
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    let (mut statuses, mut not_inside) = (0, 0);
    for c in &captured {
        if let Some(request) = &c.answers {
            let kind = contract
                .subject_kind(&prefix, request)
                .unwrap_or_else(|| panic!("{request} matches no channel"));
            if c.status {
                statuses += 1;
            } else if contract.has_reply(kind) {
                contract.check_bus(kind, true, &c.payload, &c.headers);
                *replies.entry(kind.name().to_string()).or_default() += 1;
            } else {
                // JetStream's acks of the report job: NATS's own answer, not Inside's
                assert_eq!(kind, SubjectKind::ReportJobs, "a reply to {request}");
                not_inside += 1;
            }
            continue;
        }
        let kind = contract
            .subject_kind(&prefix, &c.subject)
            .unwrap_or_else(|| panic!("{} matches no channel of the document", c.subject));
        assert!(!c.status, "a NATS status on {}", c.subject);
        let names = contract.check_bus(kind, false, &c.payload, &c.headers);
        assert!(
            c.reply.is_none() || contract.has_reply(kind) || kind == SubjectKind::ReportJobs,
            "{} asks for a reply the document does not give",
            c.subject
        );
        headers_seen.entry(kind).or_default().extend(names);
        *seen.entry(kind.name().to_string()).or_default() += 1;
    }
    let on_bus: usize = seen.values().sum();
    let answered: usize = replies.values().sum();
    println!(
        "checked {on_bus} bus messages ({seen:?}) and {answered} replies ({replies:?}); \
         skipped {statuses} NATS statuses and {not_inside} JetStream acks; on the sockets \
         {} received ({:?}) and {} sent",
        Tally::total(&tally.received),
        tally.received.lock().unwrap(),
        Tally::total(&tally.sent),
    );
    // every family of subjects: a session on NATS with Redis and two workers with a speaker
    // model publishes on all of them
    for kind in SubjectKind::ALL {
        assert!(seen.contains_key(kind.name()), "nothing on {kind:?}");
        let declared: BTreeSet<String> = contract.declared_headers(*kind).into_iter().collect();
        let got = headers_seen.remove(kind).unwrap_or_default();
        assert_eq!(got, declared, "{kind:?}: headers sent vs declared");
    }
    for kind in REPLIED {
        assert!(replies.contains_key(kind.name()), "no reply on {kind:?}");
    }
}
