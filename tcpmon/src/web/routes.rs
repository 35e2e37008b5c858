//! What the HTTP endpoint answers: `/metrics` for Prometheus, `/healthz` for liveness probes and
//! `/` for people, all behind basic auth and with extra headers when the web config asks.
use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{header, HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus::{Encoder, Registry, TextEncoder};

use super::{basic_auth::BasicAuth, web_config::WebConfig};

/// The service the server runs for every request.
pub fn router(registry: Registry, web: &WebConfig) -> Router {
    let guard = Arc::new(Guard {
        auth: (!web.users.is_empty()).then(|| BasicAuth::new(web.users.clone())),
        headers: web.headers.clone(),
    });
    let scrapes = Arc::new(Scrapes {
        registry: Arc::new(registry),
        latest: tokio::sync::Mutex::new(None),
    });
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(scrapes)
        .layer(middleware::from_fn_with_state(guard, apply_guard))
}

/// Basic auth and extra headers, from the web config.
struct Guard {
    auth: Option<BasicAuth>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

async fn apply_guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let allowed = match &guard.auth {
        Some(auth) => {
            auth.allows(request.headers().get(header::AUTHORIZATION))
                .await
        }
        None => true,
    };
    let mut response = if allowed {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "unauthorized\n",
        )
            .into_response()
    };
    response.headers_mut().extend(guard.headers.iter().cloned());
    response
}

async fn index() -> Html<&'static str> {
    Html("<html><head><title>tcpmon</title></head><body><h1>tcpmon</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n")
}

/// Collects and encodes scrapes. Scrapes that arrive while a collection runs wait for it and
/// then share the next one, which starts after they all arrived: every answer is newer than
/// its request (a test that scrapes after its workload sees all of it), and a thousand
/// scrapers at once cost two collections and one body in memory, not a thousand.
struct Scrapes {
    registry: Arc<Registry>,
    /// When the last collection started, and its encoded body.
    latest: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Scrapes {
    async fn scrape(&self) -> Result<Bytes, String> {
        let arrived = Instant::now();
        // tokio's Mutex is fair: waiters take it in arrival order.
        let mut latest = self.latest.lock().await;
        if let Some((started, body)) = &*latest {
            if *started >= arrived {
                return Ok(body.clone());
            }
        }
        let started = Instant::now();
        let registry = Arc::clone(&self.registry);
        // Reading the maps makes a few hundred syscalls: keep them off the async thread.
        let body = tokio::task::spawn_blocking(move || {
            let mut body = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut body)
                .map(|()| Bytes::from(body))
        })
        .await
        .map_err(|e| format!("collector: {e}"))?
        .map_err(|e| format!("encoding: {e}"))?;
        *latest = Some((started, body.clone()));
        Ok(body)
    }
}

async fn metrics(State(scrapes): State<Arc<Scrapes>>) -> Response {
    match scrapes.scrape().await {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
