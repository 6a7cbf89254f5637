//! Voiceprint enrolment for a distributed gateway: requests on
//! `inside.v1.embed` (queue group `workers`) carry the uploaded file with its
//! MIME type in `Content-Type`; the reply is an [`EmbedReply`] with the
//! embedding and quality, or the reason there is none. Only the embedding
//! leaves the worker, never the audio.

use std::ops::ControlFlow;
use std::sync::Arc;

use inside_bus::{Bus, BusMessage, Subscription};
use inside_engine::speech::{enrol_recording, Codec, SpeechError};
use inside_schemas::audio::headers;
use inside_schemas::{EmbedRefusal, EmbedReply};
use tokio_util::sync::CancellationToken;

use super::speakers::SpeakerAttribution;

/// Answers enrolment requests until `shutdown`.
pub async fn run_enrolment(
    bus: Bus,
    sub: Subscription,
    attribution: Arc<SpeakerAttribution>,
    shutdown: CancellationToken,
) {
    sub.serve(&shutdown, |msg| async {
        answer(&bus, msg, &attribution).await;
        ControlFlow::Continue(())
    })
    .await;
}

async fn answer(bus: &Bus, msg: BusMessage, attribution: &Arc<SpeakerAttribution>) {
    let Some(reply_to) = msg.reply.clone() else {
        tracing::debug!("embed request without a reply subject ignored");
        return;
    };
    let reply = embed(bus, msg, attribution.clone()).await;
    metrics::counter!("inside_enrolments_total", "outcome" => match &reply {
        EmbedReply::Ok { .. } => "ok",
        EmbedReply::Error { .. } => "refused",
    })
    .increment(1);
    if let Err(e) = bus.publish_json(reply_to, &reply).await {
        tracing::warn!(error = %e, "replying to an embed request failed");
    }
}

async fn embed(bus: &Bus, msg: BusMessage, attribution: Arc<SpeakerAttribution>) -> EmbedReply {
    let Some(codec) = msg
        .header(headers::CONTENT_TYPE)
        .and_then(Codec::from_mime)
        .filter(|c| *c != Codec::PcmS16le)
    else {
        return refused(
            EmbedRefusal::UnsupportedMediaType,
            "expected audio/wav, audio/flac, audio/ogg or audio/mpeg".into(),
        );
    };
    let data = match bus.request_body(&msg).await {
        Ok(body) => body.to_vec(),
        Err(e) => {
            return refused(
                EmbedRefusal::Internal,
                format!("reading the uploaded recording: {e}"),
            )
        }
    };
    let outcome = tokio::task::spawn_blocking(move || {
        attribution
            .pool
            .install(|| enrol_recording(&attribution.model, data, codec))
    })
    .await;
    match outcome {
        Ok(Ok(print)) => EmbedReply::Ok {
            embedding: print.embedding,
            seconds: f64::from(print.seconds),
            quality: f64::from(print.quality),
        },
        Ok(Err(e)) => {
            let code = match &e {
                SpeechError::TooLarge(_) => EmbedRefusal::PayloadTooLarge,
                SpeechError::ModelMissing(_) | SpeechError::Config(_) | SpeechError::Model(_) => {
                    EmbedRefusal::ModelUnavailable
                }
                SpeechError::Io(_) | SpeechError::Resample(_) => EmbedRefusal::Internal,
                _ => EmbedRefusal::ValidationError,
            };
            refused(code, e.to_string())
        }
        Err(e) => refused(
            EmbedRefusal::Internal,
            format!("enrolment task failed: {e}"),
        ),
    }
}

fn refused(code: EmbedRefusal, message: String) -> EmbedReply {
    EmbedReply::Error { code, message }
}
