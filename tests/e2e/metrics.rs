//! Each service's `/metrics`, scraped from the service processes after
//! real traffic: the counters move by what happened, and no label carries
//! an openid, a token or a code.

use std::{net::SocketAddr, time::Duration};

use wxlogin_wechat_sim::MintCode;

use crate::faults::Stack;

/// The sum of every series of `name` whose labels include `labels`, in a
/// Prometheus text exposition.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let rest = rest.strip_suffix('}')?;
            let all = labels
                .iter()
                .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The three services' expositions: gateway, auth, user.
async fn scrape_all(stack: &Stack) -> [String; 3] {
    let [gateway, auth, user] = stack.metrics.expect("metrics were asked for");
    [
        scrape(gateway).await,
        scrape(auth).await,
        scrape(user).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_counts_what_happened() {
    // A budget of two refused codes per client address.
    let stack = Stack::start_with(
        Duration::from_secs(2),
        &[("RATE_LIMIT_LOGIN_PER_IP", "2")],
        true,
    )
    .await;
    let http = reqwest::Client::new();
    let login = |code: String| {
        http.post(format!("{}/v1/login", stack.base_url))
            .json(&serde_json::json!({ "code": code }))
            .send()
    };
    let before = scrape_all(&stack).await;

    // A first login, then its /v1/me.
    let minted = stack.sim.sim.mint_code(MintCode::default());
    let answer = login(minted.code.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let me = http
        .get(format!("{}/v1/me", stack.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // Two codes WeChat refuses spend the budget; the third login is refused
    // before WeChat is asked.
    let mut statuses = Vec::new();
    for code in ["bogus-code-1", "bogus-code-2", "bogus-code-3"] {
        statuses.push(login(code.to_owned()).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429]);

    let after = scrape_all(&stack).await;
    let moved = |service: usize, name: &str, labels: &[(&str, &str)]| {
        value(&after[service], name, labels) - value(&before[service], name, labels)
    };
    let (gateway, auth, user) = (0, 1, 2);

    // The gateway: HTTP answers by route and status, logins by outcome.
    let requests = "wxlogin_http_requests_total";
    let login_route = ("route", "/v1/login");
    assert_eq!(
        moved(gateway, requests, &[login_route, ("status", "200")]),
        1.0
    );
    assert_eq!(
        moved(gateway, requests, &[login_route, ("status", "401")]),
        2.0
    );
    assert_eq!(
        moved(gateway, requests, &[login_route, ("status", "429")]),
        1.0
    );
    assert_eq!(
        moved(gateway, requests, &[("route", "/v1/me"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        moved(
            gateway,
            "wxlogin_http_request_duration_seconds_count",
            &[login_route]
        ),
        4.0
    );
    let logins = "wxlogin_logins_total";
    assert_eq!(
        moved(gateway, logins, &[("outcome", "ok"), ("created", "true")]),
        1.0
    );
    assert_eq!(moved(gateway, logins, &[("outcome", "invalid_code")]), 2.0);
    assert_eq!(moved(gateway, logins, &[("outcome", "rate_limited")]), 1.0);

    // Auth: its gRPC answers, the exchanges and WeChat calls behind them,
    // the refusal, the session check.
    let grpc = "wxlogin_grpc_server_requests_total";
    let auth_login = ("method", "wxlogin.auth.v1.AuthService/Login");
    assert_eq!(moved(auth, grpc, &[auth_login, ("code", "OK")]), 1.0);
    assert_eq!(
        moved(auth, grpc, &[auth_login, ("code", "UNAUTHENTICATED")]),
        2.0
    );
    assert_eq!(
        moved(auth, grpc, &[auth_login, ("code", "RESOURCE_EXHAUSTED")]),
        1.0
    );
    let exchanges = "wxlogin_auth_code_exchanges_total";
    assert_eq!(moved(auth, exchanges, &[("outcome", "ok")]), 1.0);
    assert_eq!(moved(auth, exchanges, &[("outcome", "refused")]), 2.0);
    let wechat = "wxlogin_wechat_calls_total";
    let code2session = ("api", "jscode2session");
    assert_eq!(moved(auth, wechat, &[code2session, ("errcode", "0")]), 1.0);
    assert_eq!(
        moved(auth, wechat, &[code2session, ("errcode", "40029")]),
        2.0
    );
    assert_eq!(
        moved(
            auth,
            "wxlogin_auth_rate_limited_total",
            &[("budget", "login_ip")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            auth,
            "wxlogin_auth_session_validations_total",
            &[("outcome", "live")]
        ),
        1.0
    );

    // User: the registration.
    let upsert = ("method", "wxlogin.user.v1.UserService/UpsertUser");
    assert_eq!(
        moved(user, grpc, &[("service", "user"), upsert, ("code", "OK")]),
        1.0
    );
    // Its database pool, sampled every second: at least the connection
    // the registration used, and its limit.
    let pool = "wxlogin_db_pool_connections";
    let connections = value(&after[user], pool, &[("state", "in_use")])
        + value(&after[user], pool, &[("state", "idle")]);
    assert!(connections >= 1.0, "{connections} connections");
    assert!(value(&after[user], "wxlogin_db_pool_max_connections", &[]) >= connections);

    // The gateway's side of the same calls, as it saw them.
    let client = "wxlogin_grpc_client_requests_total";
    let to_auth = ("service", "auth");
    assert_eq!(
        moved(gateway, client, &[to_auth, auth_login, ("code", "OK")]),
        1.0
    );
    assert_eq!(
        moved(
            gateway,
            client,
            &[to_auth, auth_login, ("code", "UNAUTHENTICATED")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            gateway,
            client,
            &[to_auth, auth_login, ("code", "RESOURCE_EXHAUSTED")]
        ),
        1.0
    );
    let validate = ("method", "wxlogin.auth.v1.AuthService/ValidateSession");
    assert_eq!(
        moved(gateway, client, &[to_auth, validate, ("code", "OK")]),
        1.0
    );
    assert_eq!(
        moved(
            gateway,
            client,
            &[("service", "user"), upsert, ("code", "OK")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            gateway,
            "wxlogin_grpc_client_request_duration_seconds_count",
            &[to_auth, auth_login]
        ),
        4.0
    );

    // No label names a user, a session or a code.
    for exposition in &after {
        for secret in [
            minted.openid.as_str(),
            token.as_str(),
            minted.code.as_str(),
            "bogus-code",
        ] {
            assert!(!exposition.contains(secret), "{secret} in {exposition}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_and_calls_between_services_are_counted() {
    let stack = Stack::start_with(Duration::from_secs(5), &[], true).await;
    let http = reqwest::Client::new();
    let login = |code: String| {
        http.post(format!("{}/v1/login", stack.base_url))
            .json(&serde_json::json!({ "code": code }))
            .send()
    };
    let minted = stack.sim.sim.mint_code(MintCode::default());
    let answer = login(minted.code.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let before = scrape_all(&stack).await;

    // A profile from encrypted data: the user service asks auth for the
    // session key.
    let profile = stack.post_sealed_profile(&http, &minted, &token).await;
    assert_eq!(profile.status(), 200);
    // The users table gone (from this test's own database): a new user's
    // registration fails in the database.
    let db = sea_orm::Database::connect(stack.database_url())
        .await
        .unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(&db, "DROP TABLE users")
        .await
        .unwrap();
    drop(db.close().await);
    let refused = login(stack.sim.sim.mint_code(MintCode::default()).code)
        .await
        .unwrap();
    assert_eq!(refused.status(), 500);

    let after = scrape_all(&stack).await;
    let moved = |service: usize, name: &str, labels: &[(&str, &str)]| {
        value(&after[service], name, labels) - value(&before[service], name, labels)
    };
    let (gateway, user) = (0, 2);
    let key = ("method", "wxlogin.auth.v1.AuthService/GetSessionKey");
    let client = "wxlogin_grpc_client_requests_total";
    assert_eq!(
        moved(user, client, &[("service", "auth"), key, ("code", "OK")]),
        1.0
    );
    assert!(moved(user, "wxlogin_db_errors_total", &[("kind", "other")]) >= 1.0);
    let upsert = ("method", "wxlogin.user.v1.UserService/UpsertUser");
    assert_eq!(
        moved(
            gateway,
            client,
            &[("service", "user"), upsert, ("code", "INTERNAL")]
        ),
        1.0
    );
}

/// The dashboard in `deploy/grafana/` asks only for metrics the services
/// export, under the names they export them by.
#[test]
fn the_dashboard_names_only_exported_metrics() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/wxlogin.json"
    ))
    .unwrap();
    let known: Vec<&str> = wxlogin_common::metrics::name::ALL
        .iter()
        .chain(wxlogin_wechat::metrics_names::ALL)
        .copied()
        .collect();
    let mut asked = 0;
    for (at, _) in dashboard.match_indices("wxlogin_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            known.contains(&base),
            "the dashboard asks for {name}, which nothing exports"
        );
        asked += 1;
    }
    assert!(asked >= 10, "{asked}");
}
