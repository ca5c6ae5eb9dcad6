//! `probe`, the first step of the MCP authorization chain, against small
//! axum routes on 127.0.0.1: what a server answers a request without a
//! token, read from its `401` challenge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use tower_token_refresh_rmcp::{Unauthenticated, probe};
use tower_token_refresh_test_util::hyper_client;

async fn start() -> String {
    let app = Router::new()
        .route(
            "/challenged",
            post(|headers: HeaderMap| async move {
                // A probe carries no token.
                assert!(!headers.contains_key(header::AUTHORIZATION));
                (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        r#"Bearer error="invalid_token", scope="mcp:basic mcp:read", resource_metadata="http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp""#,
                    )],
                )
            }),
        )
        .route(
            "/bare",
            post(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, r#"Bearer realm="mcp""#)],
                )
            }),
        )
        .route("/open", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

#[tokio::test]
async fn a_401_gives_the_challenges_metadata_url_and_scope() {
    let origin = start().await;
    let answer = probe(hyper_client(), &format!("{origin}/challenged"))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Unauthenticated::Challenged {
            resource_metadata: Some(
                "http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp"
                    .parse()
                    .unwrap()
            ),
            scope: Some("mcp:basic mcp:read".to_owned()),
        }
    );
}

#[tokio::test]
async fn a_401_that_names_nothing_still_asks_for_a_token() {
    let origin = start().await;
    let answer = probe(hyper_client(), &format!("{origin}/bare"))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Unauthenticated::Challenged {
            resource_metadata: None,
            scope: None,
        }
    );
}

#[tokio::test]
async fn a_server_that_answers_without_a_token_is_open() {
    let origin = start().await;
    let answer = probe(hyper_client(), &format!("{origin}/open"))
        .await
        .unwrap();
    assert_eq!(answer, Unauthenticated::Open);
}
