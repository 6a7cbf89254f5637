//! The NATS side of the bus: connection options that size subscription
//! buffers and make slow consumers visible (async-nats drops silently when a
//! subscription's buffer fills).

use crate::{BusError, SUBSCRIPTION_CAPACITY};

pub(crate) async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::SlowConsumer(sid) => {
                    metrics::counter!("inside_bus_slow_consumer_total", "bus" => "nats")
                        .increment(1);
                    tracing::warn!(subscription = sid, "NATS slow consumer: messages dropped");
                }
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::info!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await?;
    Ok(client)
}
