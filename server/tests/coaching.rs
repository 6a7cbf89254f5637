//! Relationships, consent, sessions, reports, history, activities and pokes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use inside_schemas::{EventBody, FeatureFrame, Nudge, NudgeType};
use inside_store::events::SessionEvent;
use serde_json::{json, Value};
use uuid::Uuid;

both_databases!(
    relationship_kinds_and_emails_are_validated,
    consent_is_only_changed_by_the_member_themself,
    session_needs_every_member_consent,
    non_members_get_404_for_sessions_and_relationships,
    finalize_writes_the_report_from_recorded_events,
    rows_packed_as_event_objects_before_are_still_read,
    finalizing_twice_conflicts,
    history_is_newest_first_and_paginated,
    pokes_are_listed_newest_first_and_rate_limited,
    activities_follow_the_reports,
    pending_report_job_runs_after_a_restart,
);

async fn relationship_kinds_and_emails_are_validated(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signup(&unique_email("a")).await;
    let t = Some(token(&a));
    let (s, body) = app
        .post(
            "/v1/relationships",
            t,
            json!({"partner_email": unique_email("b"), "kind": "enemies"}),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    let (s, _) = app
        .post(
            "/v1/relationships",
            t,
            json!({"partner_email": "nope", "kind": "work"}),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = app
        .post(
            "/v1/relationships",
            t,
            json!({"partner_email": a["user"]["email"], "kind": "work"}),
        )
        .await;
    assert_eq!(s, 422, "not with yourself");
    for kind in ["romantic", "family", "friends", "work", "other"] {
        let (s, rel) = app
            .post(
                "/v1/relationships",
                t,
                json!({"partner_email": unique_email("k"), "kind": kind}),
            )
            .await;
        assert_eq!((s, rel["kind"].as_str()), (201, Some(kind)));
    }
    let (s, list) = app.get("/v1/relationships", t).await;
    assert_eq!((s, list.as_array().map(Vec::len)), (200, Some(5)));
}

async fn consent_is_only_changed_by_the_member_themself(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    let b_id = b["user"]["id"].as_str().unwrap();
    let (s, body) = app
        .put(
            &format!("/v1/relationships/{rid}/consent/{b_id}"),
            Some(token(&a)),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert_error(&body, "forbidden");
    let (s, rel) = app
        .put(
            &format!("/v1/relationships/{rid}/consent/{b_id}"),
            Some(token(&b)),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(rel["members"][1]["consent"], "revoked");
    let (s, _) = app
        .put(
            &format!("/v1/relationships/{rid}/consent/{b_id}"),
            Some(token(&b)),
            json!({"status": "pending"}),
        )
        .await;
    assert_eq!(s, 422, "pending is not a choice");
    let (s, _) = app
        .put(
            &format!("/v1/relationships/{}/consent/{b_id}", Uuid::new_v4()),
            Some(token(&b)),
            json!({"status": "granted"}),
        )
        .await;
    assert_eq!(s, 404);
}

async fn session_needs_every_member_consent(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    let b_id = b["user"]["id"].as_str().unwrap();
    app.put(
        &format!("/v1/relationships/{rid}/consent/{b_id}"),
        Some(token(&b)),
        json!({"status": "revoked"}),
    )
    .await;
    let (s, body) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    assert_eq!(s, 403);
    assert_error(&body, "consent_required");
    app.put(
        &format!("/v1/relationships/{rid}/consent/{b_id}"),
        Some(token(&b)),
        json!({"status": "granted"}),
    )
    .await;
    let (s, session) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    assert_eq!(s, 201, "{session}");
    assert_eq!(session["status"], "active");
    assert_eq!(session["finalized_at"], Value::Null);
    let (s, got) = app
        .get(
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
            Some(token(&b)),
        )
        .await;
    assert_eq!((s, &got), (200, &session));
    // a pending invitee also blocks sessions
    let (s, rel) = app
        .post(
            "/v1/relationships",
            Some(token(&a)),
            json!({"partner_email": unique_email("later"), "kind": "friends"}),
        )
        .await;
    assert_eq!(s, 201);
    let a_id = a["user"]["id"].as_str().unwrap();
    app.put(
        &format!(
            "/v1/relationships/{}/consent/{a_id}",
            rel["id"].as_str().unwrap()
        ),
        Some(token(&a)),
        json!({"status": "granted"}),
    )
    .await;
    let (s, _) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rel["id"]}),
        )
        .await;
    assert_eq!(s, 403);
}

async fn non_members_get_404_for_sessions_and_relationships(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let stranger = app.signup(&unique_email("s")).await;
    let (_, session) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    let sid = session["id"].as_str().unwrap();
    let t = Some(token(&stranger));
    for path in [
        format!("/v1/sessions/{sid}"),
        format!("/v1/sessions/{sid}/report"),
        format!("/v1/pokes?rid={rid}"),
        format!("/v1/activities/suggestions?rid={rid}"),
        "/v1/sessions/not-a-uuid".to_string(),
    ] {
        let (s, body) = app.get(&path, t).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_error(&body, "not_found");
    }
    let (s, _) = app.finalize(&sid, t).await;
    assert_eq!(s, 404);
    let (s, _) = app
        .post("/v1/sessions", t, json!({"relationship_id": rid}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .post(
            "/v1/pokes",
            t,
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 404);
}

fn frame(ts: i64, rate: f64) -> EventBody {
    EventBody::Frame(FeatureFrame {
        timestamp_ms: ts,
        speaking_rate: rate,
        overlap_ratio: 0.0,
        seq: None,
        received_ms: None,
    })
}

/// Packed rows were a plain array of event objects (kind `batch`) before the compact form:
/// a database written then still reads, beside rows written now.
async fn rows_packed_as_event_objects_before_are_still_read(db: Db) {
    let app = spawn_app(db).await;
    let (a, _, rid) = app.couple().await;
    let sid: Uuid = app.start_session(&a, &rid).await.parse().unwrap();
    let ua: Uuid = a["user"]["id"].as_str().unwrap().parse().unwrap();
    let old = vec![frame(0, 1.0), frame(500, 2.0)];
    sqlx::query(
        "INSERT INTO session_events (session_id, user_id, kind, ts_ms, payload, frames) \
         VALUES ($1, $2, 'batch', 0, $3, 2)",
    )
    .bind(sid.to_string())
    .bind(ua.to_string())
    .bind(serde_json::to_string(&old).unwrap())
    .execute(app.state.store.pool())
    .await
    .unwrap();
    let new: Vec<SessionEvent> = [frame(1000, 3.0), frame(1500, 4.0)]
        .into_iter()
        .map(|body| SessionEvent {
            session_id: sid,
            user_id: Some(ua),
            body,
        })
        .collect();
    app.state.store.append_events(&new).await.unwrap();
    let back: Vec<EventBody> = app
        .state
        .store
        .session_events(sid)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.body)
        .collect();
    let want: Vec<EventBody> = old
        .into_iter()
        .chain(new.into_iter().map(|e| e.body))
        .collect();
    assert_eq!(back, want);
}

async fn finalize_writes_the_report_from_recorded_events(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    let (_, session) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    let sid: Uuid = session["id"].as_str().unwrap().parse().unwrap();
    let (ua, ub): (Uuid, Uuid) = (
        a["user"]["id"].as_str().unwrap().parse().unwrap(),
        b["user"]["id"].as_str().unwrap().parse().unwrap(),
    );
    let mut events: Vec<SessionEvent> = (0..20)
        .map(|i| SessionEvent {
            session_id: sid,
            user_id: Some(ua),
            body: frame(i * 500, 4.0),
        })
        .collect();
    events.extend((0..20).map(|i| SessionEvent {
        session_id: sid,
        user_id: Some(ub),
        body: frame(i * 500, if i < 5 { 2.0 } else { 0.0 }),
    }));
    events.push(SessionEvent {
        session_id: sid,
        user_id: Some(ua),
        body: EventBody::Nudge(Nudge {
            nudge_type: NudgeType::SlowDown,
            intensity: 2,
            message: "m".into(),
            frame_seq: None,
            frame_timestamp_ms: Some(500),
        }),
    });
    app.state.store.append_events(&events).await.unwrap();
    // packed into a row per member; each member's events come back in their order
    let back = app.state.store.session_events(sid).await.unwrap();
    assert_eq!(back.len(), events.len());
    for u in [ua, ub] {
        let of = |list: &[SessionEvent]| -> Vec<SessionEvent> {
            list.iter()
                .filter(|e| e.user_id == Some(u))
                .cloned()
                .collect()
        };
        assert_eq!(of(&back), of(&events));
    }
    let (s, pending) = app
        .get(&format!("/v1/sessions/{sid}/report"), Some(token(&a)))
        .await;
    assert_eq!((s, pending), (202, json!({"status": "pending"})));
    let (s, fin) = app.finalize(&sid, Some(token(&b))).await;
    assert_eq!(s, 202, "{fin}");
    assert_eq!(fin["status"], "finalizing");
    assert!(fin["finalized_at"].is_string());
    let report = app.wait_report(&sid.to_string(), token(&a)).await;
    assert_eq!(report["session_id"], sid.to_string());
    assert_eq!(report["frames"], 40);
    assert_eq!(report["duration_s"], 9.5);
    assert_eq!(
        report["nudges"],
        json!({"total": 1, "by_type": {"SLOW_DOWN": 1}})
    );
    assert_eq!(report["speakers"][0]["user_id"], ua.to_string());
    assert_eq!(report["speakers"][0]["talk_time_s"], 10.0);
    assert_eq!(report["speakers"][0]["talk_share"], 0.8);
    assert_eq!(report["speakers"][0]["nudges"], 1);
    assert_eq!(report["speakers"][1]["talk_time_s"], 2.5);
    assert!(!report["highlights"].as_array().unwrap().is_empty());
    assert!(report["suggested_activities"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["reason"].is_string()));
    let (_, done) = app
        .get(&format!("/v1/sessions/{sid}"), Some(token(&a)))
        .await;
    assert_eq!(done["status"], "completed");
}

async fn finalizing_twice_conflicts(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let (_, session) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    let sid = session["id"].as_str().unwrap();
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    let (s, body) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 409);
    assert_error(&body, "already_finalized");
    let (s, _) = app
        .post(
            &format!("/v1/sessions/{}/finalize", Uuid::new_v4()),
            Some(token(&a)),
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
}

async fn history_is_newest_first_and_paginated(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, s) = app
            .post(
                "/v1/sessions",
                Some(token(&a)),
                json!({"relationship_id": rid}),
            )
            .await;
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/history/sessions?limit=2&cursor={c}"),
            None => "/v1/history/sessions?limit=2".to_string(),
        };
        let (s, page) = app.get(&path, Some(token(&b))).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for i in items {
            assert_eq!(i["report_ready"], false);
            seen.push(i["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in ["limit=0", "limit=101", "limit=x", "cursor=garbage"] {
        let (s, body) = app
            .get(&format!("/v1/history/sessions?{bad}"), Some(token(&a)))
            .await;
        assert_eq!(s, 422, "{bad}: {body}");
    }
}

async fn pokes_are_listed_newest_first_and_rate_limited(db: Db) {
    let app = spawn_app_with(db, &[("POKE_LIMIT", "3")]).await;
    let (a, b, rid) = app.couple().await;
    for kind in ["thinking_of_you", "hug", "talk_tonight"] {
        let (s, p) = app
            .post(
                "/v1/pokes",
                Some(token(&a)),
                json!({"relationship_id": rid, "kind": kind, "message": null}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        assert_eq!(p["from_user_id"], a["user"]["id"]);
    }
    let res = app
        .http
        .post(app.url("/v1/pokes"))
        .bearer_auth(token(&a))
        .json(&json!({"relationship_id": rid, "kind": "hug"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let (s, _) = app
        .post(
            "/v1/pokes",
            Some(token(&b)),
            json!({"relationship_id": rid, "kind": "custom", "message": "x".repeat(501)}),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = app
        .post(
            "/v1/pokes",
            Some(token(&b)),
            json!({"relationship_id": rid, "kind": "wave"}),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = app
        .post(
            "/v1/pokes",
            Some(token(&b)),
            json!({"relationship_id": rid, "kind": "custom", "message": "dinner?"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, page) = app
        .get(&format!("/v1/pokes?rid={rid}&limit=3"), Some(token(&b)))
        .await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["custom", "talk_tonight", "hug"]);
    let c = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(
            &format!("/v1/pokes?rid={rid}&limit=3&cursor={c}"),
            Some(token(&b)),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["kind"], "thinking_of_you");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (s, _) = app.get("/v1/pokes", Some(token(&b))).await;
    assert_eq!(s, 422, "rid is required");
}

async fn activities_follow_the_reports(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let (s, first) = app
        .get(
            &format!("/v1/activities/suggestions?rid={rid}"),
            Some(token(&a)),
        )
        .await;
    assert_eq!(s, 200);
    assert!(first.as_array().unwrap().len() >= 3);
    let (_, session) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    let sid: Uuid = session["id"].as_str().unwrap().parse().unwrap();
    let ua: Uuid = a["user"]["id"].as_str().unwrap().parse().unwrap();
    let nudges: Vec<SessionEvent> = (0..6)
        .map(|i| SessionEvent {
            session_id: sid,
            user_id: Some(ua),
            body: EventBody::Nudge(Nudge {
                nudge_type: NudgeType::SlowDown,
                intensity: 1,
                message: "m".into(),
                frame_seq: Some(i),
                frame_timestamp_ms: Some(i),
            }),
        })
        .collect();
    app.state.store.append_events(&nudges).await.unwrap();
    app.post(
        &format!("/v1/sessions/{sid}/finalize"),
        Some(token(&a)),
        json!({}),
    )
    .await;
    app.wait_report(&sid.to_string(), token(&a)).await;
    let (_, after) = app
        .get(
            &format!("/v1/activities/suggestions?rid={rid}"),
            Some(token(&a)),
        )
        .await;
    let first_pick = &after[0];
    assert_eq!(first_pick["id"], "paced-breathing", "{after}");
    assert!(
        first_pick["reason"].as_str().unwrap().contains("6"),
        "{first_pick}"
    );
    assert_ne!(first, after);
}

async fn pending_report_job_runs_after_a_restart(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let (_, session) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    let sid: Uuid = session["id"].as_str().unwrap().parse().unwrap();
    let store = app.state.store.clone();
    let (env, dir) = app.stop().await;
    // The process died right after finalize enqueued the job.
    let reopened = inside_store::Store::connect(&env["DATABASE_URL"], 2, false)
        .await
        .unwrap();
    reopened.begin_finalize(sid).await.unwrap();
    reopened
        .enqueue_job(inside_store::jobs::REPORT, sid)
        .await
        .unwrap();
    reopened.close().await;
    drop(store);
    let app = start(env, dir).await;
    let report = app.wait_report(&sid.to_string(), token(&a)).await;
    assert_eq!(report["session_id"], sid.to_string());
}
