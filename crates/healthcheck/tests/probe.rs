//! The probe against real servers on ephemeral ports: a tonic health
//! service, and a bare HTTP/1.1 responder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;
use wxlogin_healthcheck::{Probe, ProbeError};

const TIMEOUT: Duration = Duration::from_secs(3);

/// A gRPC server with only the health service: `""` is SERVING (tonic's
/// default), `ok.Service` SERVING and `down.Service` NOT_SERVING.
async fn health_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ok.Service", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down.Service", ServingStatus::NotServing)
        .await;
    tokio::spawn(async move {
        let _keep = reporter;
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    url
}

/// Answers every connection with `status_line` and an empty body.
async fn http_server(status_line: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0_u8; 1024];
                drop(socket.read(&mut request).await);
                let response =
                    format!("{status_line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                drop(socket.write_all(response.as_bytes()).await);
            });
        }
    });
    url
}

/// A loopback URL where nothing listens.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn grpc(url: &str, service: &str) -> Probe {
    Probe::Grpc {
        url: url.to_owned(),
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn grpc_serving_is_healthy() {
    let url = health_server().await;

    for service in ["", "ok.Service"] {
        let answer = grpc(&url, service).check(TIMEOUT).await;

        let answer = answer.unwrap_or_else(|error| panic!("{service:?}: {error}"));
        assert!(answer.contains("SERVING"), "{answer}");
    }
}

#[tokio::test]
async fn grpc_not_serving_and_unknown_services_are_unhealthy() {
    let url = health_server().await;

    let down = grpc(&url, "down.Service").check(TIMEOUT).await;
    let unknown = grpc(&url, "no.Such").check(TIMEOUT).await;

    assert!(
        matches!(&down, Err(ProbeError::NotServing { status, .. }) if status == "NOT_SERVING"),
        "{down:?}"
    );
    assert!(
        matches!(unknown, Err(ProbeError::UnknownService { .. })),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable_not_a_hang() {
    let url = closed_url().await;

    let grpc = grpc(&url, "").check(TIMEOUT).await;
    let http = Probe::Http { url }.check(TIMEOUT).await;

    assert!(
        matches!(grpc, Err(ProbeError::Unreachable { .. })),
        "{grpc:?}"
    );
    assert!(
        matches!(http, Err(ProbeError::Unreachable { .. })),
        "{http:?}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections (the kernel's backlog does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());

    let answer = Probe::Http { url }.check(Duration::from_millis(300)).await;

    assert!(answer.is_err(), "{answer:?}");
    drop(listener);
}

#[tokio::test]
async fn http_2xx_is_healthy_and_anything_else_is_not() {
    let ok = http_server("HTTP/1.1 200 OK").await;
    let unavailable = http_server("HTTP/1.1 503 Service Unavailable").await;
    let redirect = http_server("HTTP/1.1 302 Found\r\nlocation: /elsewhere").await;

    let ok = Probe::Http { url: ok }.check(TIMEOUT).await;
    let unavailable = Probe::Http { url: unavailable }.check(TIMEOUT).await;
    let redirect = Probe::Http { url: redirect }.check(TIMEOUT).await;

    assert!(ok.is_ok(), "{ok:?}");
    assert!(
        matches!(unavailable, Err(ProbeError::HttpStatus { status: 503, .. })),
        "{unavailable:?}"
    );
    assert!(
        matches!(redirect, Err(ProbeError::HttpStatus { status: 302, .. })),
        "{redirect:?}"
    );
}

#[tokio::test]
async fn a_bad_url_is_reported_as_such() {
    let answer = grpc("not a url", "").check(TIMEOUT).await;

    assert!(
        matches!(answer, Err(ProbeError::InvalidUrl { .. })),
        "{answer:?}"
    );
}
