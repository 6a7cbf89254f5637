//! Graceful shutdown: SIGINT or SIGTERM cancels a token that the whole process drains on.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGINT or SIGTERM (orchestrators stop with SIGTERM, people with Ctrl-C).
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown signal received; draining");
        token.cancel();
    });
}
