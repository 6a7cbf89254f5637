//! The NATS side of the bus: connection options that present the process's identity
//! (credentials and TLS from the settings), size subscription buffers and make slow consumers
//! and the server's refusals visible (async-nats drops silently when a subscription's buffer
//! fills, and reports a permission violation only as an event).

use std::sync::atomic::AtomicU64;

use inside_settings::{ExposeSecret, NatsAuth, NatsOptions};

use crate::{BusError, SUBSCRIPTION_CAPACITY};

/// Messages this process's NATS subscriptions dropped, for a log that does not flood.
static SLOW_CONSUMER_DROPS: AtomicU64 = AtomicU64::new(0);

/// 1 while the NATS connection is up, 0 while it is down.
pub(crate) const NATS_CONNECTED: &str = "inside_nats_connected";

pub(crate) async fn connect(
    url: &str,
    name: &str,
    options: &NatsOptions,
) -> Result<async_nats::Client, BusError> {
    let client = connect_options(options)
        .await?
        .name(name)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::SlowConsumer(sid) => {
                    // async-nats reports each dropped message
                    crate::count_dropped("nats", sid, &SLOW_CONSUMER_DROPS);
                }
                async_nats::Event::Disconnected => {
                    metrics::gauge!(NATS_CONNECTED).set(0.0);
                    tracing::warn!("NATS disconnected");
                }
                async_nats::Event::Connected => {
                    metrics::gauge!(NATS_CONNECTED).set(1.0);
                    tracing::info!("NATS connected");
                }
                // a permission violation: this identity may not publish or subscribe there
                async_nats::Event::ServerError(e) => {
                    metrics::counter!("inside_bus_server_errors_total").increment(1);
                    tracing::warn!(error = %e, "NATS server refused an operation");
                }
                other => tracing::info!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await?;
    // the first connection may come before the callback is listened to
    metrics::gauge!(NATS_CONNECTED).set(1.0);
    Ok(client)
}

/// async-nats' options for the identity and TLS of `options`.
async fn connect_options(options: &NatsOptions) -> Result<async_nats::ConnectOptions, BusError> {
    let mut opts = match &options.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| BusError::Credentials(format!("{}: {e}", path.display())))?,
        NatsAuth::NkeySeed(seed) => {
            // async-nats only logs a bad seed and reports "authentication"; say which setting
            if nkeys::KeyPair::from_seed(seed.expose_secret()).is_err() {
                return Err(BusError::Credentials(
                    "NATS_NKEY_SEED is not a valid nkey seed".into(),
                ));
            }
            async_nats::ConnectOptions::with_nkey(seed.expose_secret().to_string())
        }
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose_secret().to_string(),
            )
        }
        NatsAuth::Token(token) => {
            async_nats::ConnectOptions::with_token(token.expose_secret().to_string())
        }
    };
    if let Some(ca) = &options.tls.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let Some(cert) = &options.tls.client_cert {
        opts = opts.add_client_certificate(cert.cert_file.clone(), cert.key_file.clone());
    }
    Ok(opts.require_tls(options.tls.required))
}
