//! A TCP proxy a test puts in front of a server (MySQL) to make it
//! unreachable and reachable again without touching the server itself,
//! which other tests share.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Mutex,
    task::{AbortHandle, JoinHandle},
};

/// Forwards every connection to `upstream` until [`cut`](Proxy::cut).
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("bind the proxy: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("the proxy's address: {error}"));
        let cut = Arc::new(AtomicBool::new(false));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let cut = cut.clone();
            let tasks = tasks.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    // Closed at once: the client sees its connection end
                    // before the server's greeting, as with a dead server.
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            drop(tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await);
                        }
                    });
                    tasks.lock().await.push(task.abort_handle());
                }
            }
        });
        Proxy {
            addr,
            cut,
            tasks,
            accept,
        }
    }

    /// A proxy in front of the server `url` (`scheme://user@host:port/db`)
    /// points to, and `url` pointed at the proxy instead.
    pub async fn in_front_of(url: &str) -> (Proxy, String) {
        let proxy = Proxy::start(upstream_of(url)).await;
        let via = via(url, proxy.addr);
        (proxy, via)
    }

    /// Closes every proxied connection, as a restarted MySQL server would,
    /// and answers how many there were; new connections still get through.
    pub async fn drop_connections(&self) -> usize {
        let mut tasks = self.tasks.lock().await;
        let open = tasks.iter().filter(|task| !task.is_finished()).count();
        for task in tasks.drain(..) {
            task.abort();
        }
        open
    }

    /// The server is gone: every proxied connection is closed, and new ones
    /// are closed as soon as they are accepted, until [`restore`](Self::restore).
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.drop_connections().await;
    }

    /// The server is back: new connections get through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(tasks) = self.tasks.try_lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

/// `url` with its host and port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (before, _, after) = split_host(url);
    format!("{before}{addr}{after}")
}

/// The `host:port` that `url` points to.
pub fn upstream_of(url: &str) -> String {
    let (_, host, _) = split_host(url);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:3306")
    }
}

/// `scheme://user@`, `host:port`, `/database`.
fn split_host(url: &str) -> (&str, &str, &str) {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let host_start = url[scheme_end..authority_end]
        .rfind('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    (
        &url[..host_start],
        &url[host_start..authority_end],
        &url[authority_end..],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_pointed_at_the_proxy() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!());

        assert_eq!(
            via("mysql://root:pw@db:3306/users", addr),
            "mysql://root:pw@127.0.0.1:4000/users"
        );
        assert_eq!(upstream_of("mysql://root@db/users"), "db:3306");
        assert_eq!(upstream_of("mysql://root@127.0.0.1:3307"), "127.0.0.1:3307");
    }
}
