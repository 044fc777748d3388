//! The whole of wxlogin in one process: the gateway, the auth and user
//! services (the production code, still speaking gRPC to each other over
//! loopback) and, when no `WECHAT_SECRET` is configured, the WeChat
//! simulator. With nothing configured it keeps users in an embedded SQLite
//! file and sessions in memory, so it runs on a machine with nothing
//! installed; given `DATABASE_URL=mysql://…` and `REDIS_URL=redis://…` it
//! uses them instead.
//!
//! Personal data is sealed as in production. Without `DATA_ENCRYPTION_KEYS`
//! and `DATA_INDEX_KEY`, and only on SQLite, it makes the keys once, in a
//! file beside the database (`<database>.keys`, mode 0600), and reuses them
//! at every start: the file and the database go together. On MySQL the
//! keys must be configured, as for the split services.
//!
//! It adds no behaviour of its own: only defaults and wiring.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use tokio::sync::watch;
use wxlogin_common::{
    config::{ConfigError, Env, Source, optional},
    grpc,
};
use wxlogin_userdata::sealing::{INDEX_KEY_VAR, KEYS_VAR, Zeroizing, generate_key};

/// Where the embedded database lives when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://wxlogin.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("WeChat simulator: {0}")]
    Simulator(#[from] std::io::Error),
    #[error("user service: {0}")]
    User(#[from] wxlogin_user::Error),
    #[error("auth service: {0}")]
    Auth(#[from] wxlogin_auth::StartError),
    #[error("gateway: {0}")]
    Gateway(#[from] wxlogin_gateway::StartError),
    #[error("a service stopped unexpectedly: {0}")]
    Stopped(String),
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    #[error("the data key file {path}: {message}")]
    KeyFile { path: String, message: String },
}

/// The environment, over the single-process defaults.
struct Layered<'a> {
    env: &'a dyn Source,
    defaults: HashMap<&'static str, String>,
}

impl Source for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        optional(self.env, name).or_else(|| self.defaults.get(name).cloned())
    }
}

/// Where everything listens once started.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub gateway: SocketAddr,
    pub auth: SocketAddr,
    pub user: SocketAddr,
    /// The simulator, when WeChat is simulated.
    pub simulator: Option<SocketAddr>,
    pub database: String,
    pub sessions: String,
    /// Where the data keys come from (never the keys).
    pub keys: String,
}

/// The system, built and listening.
pub struct System {
    pub addresses: Addresses,
    simulator: Option<wxlogin_wechat_sim::RunningSimulator>,
    user: wxlogin_user::Application,
    auth: wxlogin_auth::Application,
    gateway: wxlogin_gateway::Application,
}

impl System {
    /// Builds everything from the process environment.
    pub async fn build() -> Result<System, Error> {
        System::build_from(&Env).await
    }

    pub async fn build_from(env: &dyn Source) -> Result<System, Error> {
        let mut defaults = HashMap::from([
            ("DATABASE_URL", DEFAULT_DATABASE_URL.to_owned()),
            ("REDIS_URL", wxlogin_auth::store::MEMORY_URL.to_owned()),
            ("USER_ADDR", "127.0.0.1:0".to_owned()),
            ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
        ]);
        // The services speak to each other over loopback inside this one
        // process: fresh credentials each start, unless configured.
        for name in [grpc::INTERNAL_SECRET, grpc::INTERNAL_USER_SECRET] {
            let secret = wxlogin_auth::token::Token::generate()
                .map_err(|error| Error::Random(error.to_string()))?;
            defaults.insert(name, secret.expose().to_owned());
        }
        let keys = match local_keys(env)? {
            Some(local) => {
                for (name, value) in local.values {
                    defaults.insert(name, value);
                }
                local.described
            }
            None => format!("{KEYS_VAR} and {INDEX_KEY_VAR} (configured)"),
        };
        let simulator = if optional(env, "WECHAT_SECRET").is_none()
            && optional(env, "WECHAT_APPS").is_none()
        {
            let appid = optional(env, "WECHAT_APPID")
                .unwrap_or_else(|| wxlogin_wechat_sim::DEFAULT_APPID.to_owned());
            let secret = wxlogin_wechat_sim::DEFAULT_SECRET.to_owned();
            let addr = wxlogin_common::config::parsed(
                env,
                wxlogin_wechat_sim::ADDR_VAR,
                wxlogin_wechat_sim::DEFAULT_ADDR,
            )?;
            let config = wxlogin_wechat_sim::SimConfig {
                apps: vec![(appid.clone(), secret.clone())],
                ..wxlogin_wechat_sim::SimConfig::default()
            };
            let running = wxlogin_wechat_sim::Simulator::new(config)
                .spawn(addr)
                .await?;
            tracing::warn!(
                simulator = %running.base_url(),
                %appid,
                "no WECHAT_SECRET configured: WeChat is SIMULATED; set WECHAT_APPID and WECHAT_SECRET for real logins"
            );
            defaults.insert("WECHAT_APPID", appid);
            defaults.insert("WECHAT_SECRET", secret);
            defaults.insert("WECHAT_API_BASE", running.base_url());
            Some(running)
        } else {
            None
        };
        let source = Layered { env, defaults };

        let auth_config = wxlogin_auth::Config::from_source(&source)?;
        let sessions = redact_url(wxlogin_common::ExposeSecret::expose_secret(
            &auth_config.redis_url,
        ));
        let auth = wxlogin_auth::Application::build(auth_config).await?;

        let user_config = wxlogin_user::Config::from_source(&Forced {
            inner: &source,
            forced: HashMap::from([("AUTH_URL", format!("http://{}", auth.local_addr()))]),
        })?;
        let database = redact_url(wxlogin_common::ExposeSecret::expose_secret(
            &user_config.database_url,
        ));
        let user = wxlogin_user::Application::build(user_config).await?;

        // The gateway reaches the services where they really listen.
        let mut gateway_defaults = HashMap::new();
        gateway_defaults.insert("AUTH_URL", format!("http://{}", auth.local_addr()));
        gateway_defaults.insert("USER_URL", format!("http://{}", user.local_addr()));
        let gateway_source = Forced {
            inner: &source,
            forced: gateway_defaults,
        };
        let gateway = wxlogin_gateway::Application::build(wxlogin_gateway::Config::from_source(
            &gateway_source,
        )?)
        .await?;

        Ok(System {
            addresses: Addresses {
                gateway: gateway.local_addr(),
                auth: auth.local_addr(),
                user: user.local_addr(),
                simulator: simulator.as_ref().map(|running| running.addr),
                database,
                sessions,
                keys,
            },
            simulator,
            user,
            auth,
            gateway,
        })
    }

    /// Serves until `shutdown` completes or a part stops; then stops the rest.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_front, front_stopped) = watch::channel(false);
        let (stop_back, back_stopped) = watch::channel(false);
        let wait = |mut stopped: watch::Receiver<bool>| async move {
            drop(stopped.wait_for(|stop| *stop).await);
        };
        let mut user = tokio::spawn(self.user.run_until_stopped(wait(back_stopped.clone())));
        let mut auth = tokio::spawn(self.auth.run_until_stopped(wait(back_stopped)));
        let mut gateway = tokio::spawn(self.gateway.run_until_stopped(wait(front_stopped)));
        // Which part stopped by itself (its handle is spent), and how.
        let failed = tokio::select! {
            () = shutdown => None,
            result = &mut user => Some(("user", format!("user: {result:?}"))),
            result = &mut auth => Some(("auth", format!("auth: {result:?}"))),
            result = &mut gateway => Some(("gateway", format!("gateway: {result:?}"))),
        };
        let spent = failed.as_ref().map(|(part, _)| *part);
        // The gateway drains first: a login in flight has spent its code at
        // WeChat and must still find auth and user to finish; only then do
        // they stop.
        let _ = stop_front.send(true);
        finish(spent, "gateway", gateway).await;
        let _ = stop_back.send(true);
        tokio::join!(finish(spent, "auth", auth), finish(spent, "user", user));
        let failure = failed.map(|(_, failure)| failure);
        if let Some(simulator) = self.simulator {
            drop(simulator.shutdown().await);
        }
        match failure {
            None => Ok(()),
            Some(failure) => Err(Error::Stopped(failure)),
        }
    }
}

/// Waits for `part` to stop, unless its handle was already spent.
async fn finish<T>(spent: Option<&str>, part: &str, handle: tokio::task::JoinHandle<T>) {
    if spent != Some(part) {
        drop(handle.await);
    }
}

/// Values that win over the environment: the gateway's upstreams are the
/// services this process just started, wherever `AUTH_URL` points.
struct Forced<'a> {
    inner: &'a dyn Source,
    forced: HashMap<&'static str, String>,
}

impl Source for Forced<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.forced
            .get(name)
            .cloned()
            .or_else(|| self.inner.get(name))
    }
}

/// Data keys made for a single-process setup, and where they are kept.
struct LocalKeys {
    values: Vec<(&'static str, String)>,
    described: String,
}

/// The key file's id for the data key it makes.
const LOCAL_KEY_ID: &str = "local1";

/// The data keys from the key file beside the SQLite database (made the
/// first time), when the environment lacks one of them; `None` when it has
/// both, or when the database is not SQLite (then the services refuse to
/// start without them).
fn local_keys(env: &dyn Source) -> Result<Option<LocalKeys>, Error> {
    if optional(env, KEYS_VAR).is_some() && optional(env, INDEX_KEY_VAR).is_some() {
        return Ok(None);
    }
    let url = optional(env, "DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let Some(path) = sqlite_path(&url) else {
        return Ok(None);
    };
    let random = |error: wxlogin_userdata::sealing::SealError| Error::Random(error.to_string());
    let Some(path) = path else {
        // An in-memory database lives as long as the process: so do its keys.
        let values = vec![
            (
                KEYS_VAR,
                format!(
                    "{LOCAL_KEY_ID}:{}",
                    generate_key().map_err(random)?.as_str()
                ),
            ),
            (INDEX_KEY_VAR, generate_key().map_err(random)?.to_string()),
        ];
        return Ok(Some(LocalKeys {
            values,
            described: "made for this process (in-memory database)".into(),
        }));
    };
    let mut file = path.into_os_string();
    file.push(".keys");
    let file = PathBuf::from(file);
    let failed = |message: String| Error::KeyFile {
        path: file.display().to_string(),
        message,
    };
    let created = match std::fs::metadata(&file) {
        Ok(_) => false,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "# wxlogin's data keys for the SQLite database beside this file.\n\
                 # Keep them together: without this file its personal data cannot be read.\n\
                 {KEYS_VAR}={LOCAL_KEY_ID}:{}\n{INDEX_KEY_VAR}={}\n",
                generate_key().map_err(random)?.as_str(),
                generate_key().map_err(random)?.as_str(),
            );
            write_private(&file, &text).map_err(|error| failed(error.to_string()))?;
            true
        }
        Err(error) => return Err(failed(error.to_string())),
    };
    let text = Zeroizing::new(std::fs::read_to_string(&file).map_err(|e| failed(e.to_string()))?);
    let mut values = Vec::new();
    for name in [KEYS_VAR, INDEX_KEY_VAR] {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| failed(format!("has no {name}= line")))?;
        values.push((name, value.trim().to_owned()));
    }
    let described = format!(
        "{} {}",
        if created { "created" } else { "read from" },
        file.display()
    );
    // The file, never the keys.
    tracing::info!(file = %file.display(), created, "data keys of the single-process setup");
    Ok(Some(LocalKeys { values, described }))
}

/// Creates `path` with `text`, readable by its owner alone; fails if it
/// exists.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The file of a `sqlite:` URL: `Some(None)` for an in-memory database,
/// `None` when the URL is not SQLite's.
fn sqlite_path(url: &str) -> Option<Option<PathBuf>> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Some(None);
    }
    Some(Some(PathBuf::from(path)))
}

/// A URL without its password, for the start-up banner.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// What `wxlogin` prints once it listens: where, and how to try it.
pub fn banner(addresses: &Addresses) -> String {
    let gateway = addresses.gateway;
    let mut text = format!(
        "\nwxlogin is running\n  gateway   http://{gateway}\n  auth      grpc://{} (loopback)\n  user      grpc://{} (loopback)\n  users     {}\n  sessions  {}\n  keys      {}\n",
        addresses.auth, addresses.user, addresses.database, addresses.sessions, addresses.keys
    );
    match addresses.simulator {
        Some(sim) => {
            text.push_str(&format!(
                "  WeChat    SIMULATED at http://{sim} (set WECHAT_APPID and WECHAT_SECRET for the real one)\n\n\
                 Try it:\n\
                 \x20 code=$(curl -s -X POST http://{sim}/sim/codes -d '{{}}' | sed 's/.*\"code\":\"\\([^\"]*\\)\".*/\\1/')\n\
                 \x20 token=$(curl -s http://{gateway}/v1/login -H 'content-type: application/json' -d \"{{\\\"code\\\":\\\"$code\\\"}}\" | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')\n\
                 \x20 curl -s http://{gateway}/v1/me -H \"authorization: Bearer $token\"\n"
            ));
        }
        None => text.push_str("  WeChat    the real API (WECHAT_API_BASE)\n"),
    }
    text.push_str("\nCtrl-C stops everything.\n");
    text
}

#[cfg(test)]
mod tests {
    use super::{redact_url, sqlite_path};
    use std::path::PathBuf;

    #[test]
    fn the_key_file_goes_beside_the_sqlite_file() {
        assert_eq!(
            sqlite_path("sqlite://wxlogin.sqlite3"),
            Some(Some(PathBuf::from("wxlogin.sqlite3")))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db?mode=rwc"),
            Some(Some(PathBuf::from("/var/lib/x.db")))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), Some(None));
        assert_eq!(sqlite_path("mysql://db/x"), None);
    }

    #[test]
    fn passwords_stay_out_of_the_banner() {
        assert_eq!(
            redact_url("mysql://app:hunter2@db:3306/x"),
            "mysql://app:***@db:3306/x"
        );
        assert_eq!(redact_url("redis://:pw@r:6379"), "redis://:***@r:6379");
        assert_eq!(
            redact_url("sqlite://wxlogin.sqlite3"),
            "sqlite://wxlogin.sqlite3"
        );
        assert_eq!(redact_url("memory://"), "memory://");
    }
}
