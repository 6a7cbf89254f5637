//! The bus's health checks: the in-process bus is always up; NATS reports its connection and
//! the JetStream stream report jobs go to.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::BusHealth;
use crate::routes::health::check;

/// The in-process bus: nothing to reach.
pub struct InProcessBusHealth;

#[async_trait]
impl BusHealth for InProcessBusHealth {
    async fn checks(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("bus".to_string(), "ok".to_string())])
    }
}

/// A NATS connection and the report job stream on it.
pub struct NatsBusHealth {
    client: async_nats::Client,
    jobs_stream: String,
}

impl NatsBusHealth {
    pub fn new(client: async_nats::Client, jobs_stream: String) -> Self {
        Self {
            client,
            jobs_stream,
        }
    }
}

#[async_trait]
impl BusHealth for NatsBusHealth {
    async fn checks(&self) -> BTreeMap<String, String> {
        let c = &self.client;
        match c.connection_state() {
            async_nats::connection::State::Connected => {
                let js = async_nats::jetstream::new(c.clone());
                let (bus, jetstream) = tokio::join!(
                    check(async { c.flush().await }),
                    check(async { js.get_stream(&self.jobs_stream).await.map(|_| ()) })
                );
                BTreeMap::from([("bus".into(), bus), ("jetstream".into(), jetstream)])
            }
            other => BTreeMap::from([
                ("bus".into(), format!("error: {other}")),
                ("jetstream".into(), format!("error: NATS {other}")),
            ]),
        }
    }
}
