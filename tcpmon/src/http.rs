//! The HTTP endpoint: `/metrics` for Prometheus, `/healthz` for liveness probes.
use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::new(registry));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> Html<&'static str> {
    Html("<html><head><title>tcpmon</title></head><body><h1>tcpmon</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n")
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    // Reading the maps makes a few hundred syscalls: keep them off the async worker.
    let encoded = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut body)
            .map(|()| body)
    })
    .await;
    match encoded {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collector: {e}\n"),
        )
            .into_response(),
    }
}
