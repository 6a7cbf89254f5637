//! The two report queues: the database (embedded default and single-node deployments, whose
//! runner is woken at once) and JetStream (distributed, deduplicated by session id).

use std::sync::Arc;

use async_trait::async_trait;
use inside_bus::Subjects;
use inside_store::Store;
use tokio::sync::Notify;
use uuid::Uuid;

use super::ReportQueue;
use crate::error::{ApiError, ApiResult};

/// Jobs in the database's queue; `wake` starts the runner without waiting for its poll.
pub struct DatabaseReportQueue {
    store: Store,
    wake: Arc<Notify>,
}

impl DatabaseReportQueue {
    pub fn new(store: Store, wake: Arc<Notify>) -> Self {
        Self { store, wake }
    }
}

#[async_trait]
impl ReportQueue for DatabaseReportQueue {
    async fn enqueue(&self, sid: Uuid) -> ApiResult<()> {
        self.store
            .enqueue_job(inside_store::jobs::REPORT, sid)
            .await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// Durable jobs on JetStream (`INSIDE_JOBS`) for the worker fleet.
pub struct JetStreamReportQueue {
    client: async_nats::Client,
    subjects: Subjects,
}

impl JetStreamReportQueue {
    pub fn new(client: async_nats::Client, subjects: Subjects) -> Self {
        Self { client, subjects }
    }
}

#[async_trait]
impl ReportQueue for JetStreamReportQueue {
    async fn enqueue(&self, sid: Uuid) -> ApiResult<()> {
        inside_bus::jobs::publish_report_job(&self.client, &self.subjects, sid)
            .await
            .map_err(ApiError::internal)
    }
}
