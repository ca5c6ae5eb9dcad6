//! End to end: hyper-util's client → axum on 127.0.0.1 (test-util's
//! protected resource), with our layer against the same client attaching a
//! static header (tower-http's `AddAuthorization`), which is what the
//! request costs without token management. Each measured batch sends 256
//! requests from 8 concurrent tasks.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

const TASKS: usize = 8;
const PER_TASK: usize = 32;

async fn batch<S>(client: &S, url: &str)
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let Ok(request) = Request::get(&url).body(Full::default()) else {
                        continue;
                    };
                    match client.clone().oneshot(request).await {
                        Ok(response) => {
                            assert_eq!(
                                response.status(),
                                200,
                                "the benchmark's requests are authorized"
                            );
                            let _ = black_box(response.into_body().collect().await);
                        }
                        Err(e) => panic!("request failed: {}", e.into()),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

fn end_to_end(c: &mut Criterion) {
    let rt = match Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("a tokio runtime for the benchmark: {e}"),
    };
    let (auth, api, tokens, login) = rt.block_on(async {
        let auth = match AuthServer::start(
            AuthConfig::default().access_lifetime(Duration::from_secs(3600)),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => panic!("authorization server: {e}"),
        };
        let api = match ResourceServer::start(&auth).await {
            Ok(a) => a,
            Err(e) => panic!("resource server: {e}"),
        };
        let login = auth.login();
        let grant = RefreshTokenGrant::new(
            auth.token_url().parse().unwrap_or_default(),
            ClientAuth::basic(auth.client_id(), auth.client_secret()),
            ServiceClient::new(hyper_client()),
        );
        let tokens = TokenManager::builder(grant)
            .initial(login.token_set())
            .build();
        (auth, api, tokens, login)
    });
    let url = api.url("/api/data");
    let ours = {
        let _in_runtime = rt.enter();
        TokenRefreshLayer::new(tokens)
            .allow_origin(
                format!("http://{}", api.addr())
                    .parse()
                    .expect("a server's address is an origin"),
            )
            .layer(hyper_client())
    };
    let static_header = AddAuthorizationLayer::bearer(&login.access_token)
        .as_sensitive(true)
        .layer(hyper_client());

    // Paired rounds, alternating the two variants so that drift on a busy
    // machine hits both alike: the median of per-round throughput ratios.
    let mut ratios: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(batch(&static_header, &url));
            let base = t.elapsed().as_secs_f64();
            let t = Instant::now();
            rt.block_on(batch(&ours, &url));
            base / t.elapsed().as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "end_to_end paired: ours / static header throughput, median of {} rounds: {:.3}",
        ratios.len(),
        ratios[ratios.len() / 2]
    );

    let mut g = c.benchmark_group("end_to_end");
    g.sample_size(20);
    g.throughput(criterion::Throughput::Elements((TASKS * PER_TASK) as u64));
    g.bench_function("static_header", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                rt.block_on(batch(&static_header, &url));
            }
            started.elapsed()
        })
    });
    g.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                rt.block_on(batch(&ours, &url));
            }
            started.elapsed()
        })
    });
    g.finish();
    drop(auth);
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
