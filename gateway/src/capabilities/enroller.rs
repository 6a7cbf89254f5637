//! The two enrollers: the speaker model in this process (embedded default), or a worker that
//! has one, asked over the bus (`inside.v1.embed`, queue group `workers`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use inside_bus::Bus;
use inside_engine::speech::{enrol_recording, Codec, SpeakerModel, Voiceprint};
use inside_schemas::{EmbedRefusal, EmbedReply};

use super::Enroller;
use crate::error::{ApiError, ApiResult};
use crate::routes::users::speech_error;

/// A worker embeds 60 s in about a second; allow for a busy fleet.
const ENROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The model of this process; without one, enrolment answers 503 `model_unavailable`.
pub struct LocalEnroller {
    model: Option<Arc<SpeakerModel>>,
}

impl LocalEnroller {
    pub fn new(model: Option<Arc<SpeakerModel>>) -> Self {
        Self { model }
    }
}

#[async_trait]
impl Enroller for LocalEnroller {
    async fn enrol(&self, codec: Codec, recording: Bytes) -> ApiResult<Voiceprint> {
        let Some(model) = self.model.clone() else {
            return Err(ApiError::Unavailable(
                "model_unavailable",
                "no speaker model is configured (ECAPA_MODEL_DIR)".into(),
            ));
        };
        // decoding and the model are CPU work: off the async runtime
        tokio::task::spawn_blocking(move || enrol_recording(&model, recording.to_vec(), codec))
            .await
            .map_err(ApiError::internal)?
            .map_err(speech_error)
    }
}

/// A worker with the model, found through the bus.
pub struct WorkerEnroller {
    bus: Bus,
}

impl WorkerEnroller {
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Enroller for WorkerEnroller {
    async fn enrol(&self, codec: Codec, body: Bytes) -> ApiResult<Voiceprint> {
        let headers = inside_bus::header_map([(
            inside_schemas::audio::headers::CONTENT_TYPE,
            codec_mime(codec).to_string(),
        )]);
        let reply = self
            .bus
            .request(self.bus.subjects().embed(), headers, body, ENROL_TIMEOUT)
            .await
            .map_err(|e| match e {
                inside_bus::BusError::NoResponders => ApiError::Unavailable(
                    "model_unavailable",
                    "no worker with a speaker model is running (ECAPA_MODEL_DIR on the workers)"
                        .into(),
                ),
                inside_bus::BusError::TimedOut(waited) => {
                    tracing::warn!(?waited, "no worker answered an enrolment request in time");
                    ApiError::Unavailable(
                        "model_unavailable",
                        "the workers with a speaker model did not answer in time; try again".into(),
                    )
                }
                other => {
                    tracing::warn!(error = %other, "an enrolment request failed on the bus");
                    ApiError::Unavailable(
                        "model_unavailable",
                        "the enrolment request could not reach the workers".into(),
                    )
                }
            })?;
        match serde_json::from_slice::<EmbedReply>(&reply).map_err(ApiError::internal)? {
            EmbedReply::Ok {
                embedding,
                seconds,
                quality,
            } => Ok(Voiceprint {
                embedding,
                seconds: seconds as f32,
                quality: quality as f32,
            }),
            EmbedReply::Error { code, message } => Err(match code {
                EmbedRefusal::PayloadTooLarge => ApiError::PayloadTooLarge(message),
                EmbedRefusal::ModelUnavailable => {
                    ApiError::Unavailable("model_unavailable", message)
                }
                EmbedRefusal::UnsupportedMediaType => ApiError::UnsupportedMediaType(message),
                EmbedRefusal::ValidationError => ApiError::validation(message),
                EmbedRefusal::Internal => ApiError::internal(message),
            }),
        }
    }
}

fn codec_mime(codec: Codec) -> &'static str {
    match codec {
        Codec::Wav => "audio/wav",
        Codec::Flac => "audio/flac",
        Codec::Ogg => "audio/ogg",
        Codec::Mp3 => "audio/mpeg",
        Codec::PcmS16le => "audio/l16",
    }
}
