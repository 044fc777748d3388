//! Redis topologies of a test's own, from the machine's `redis-server`:
//! a Redis Cluster ([`PrivateRedisCluster`]: three primaries, three
//! replicas) and a Sentinel setup ([`PrivateRedisSentinel`]: a primary, a
//! replica, three sentinels), on free loopback ports with temp dirs, that a
//! test may take servers of away from. Killed and removed on drop. They
//! fail over fast (a node or primary that does not answer for a second is
//! replaced), so a test can wait for it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, redis_server_binary, temp_dir};

/// One `redis-server` process on a loopback port.
#[derive(Debug)]
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts `redis-server ARGS` in `dir` and waits until it answers on
    /// `port`; `None` when it exits first (a port taken between the check
    /// and the bind).
    fn try_start(dir: &Path, port: u16, args: &[&str]) -> Option<Server> {
        let child = Command::new(redis_server_binary())
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut server = Server {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while query(port, &["PING"]).is_err() {
            let exited = server
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} does not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// [`Server::try_start`] on fresh free ports until one works: `args`
    /// is given the server's port (and a second free port, for a cluster
    /// node's bus).
    fn start(dir: &Path, args: impl Fn(u16, u16) -> Vec<String>) -> Server {
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let args = args(port, bus);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Some(server) = Server::try_start(dir, port, &args) {
                return server;
            }
        }
        panic!("redis-server did not start on three pairs of free ports");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command to the server on `port`, its answer as text.
fn query(port: u16, command: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
}

fn text(port: u16, command: &[&str]) -> String {
    match query(port, command) {
        Ok(value) => redis::from_redis_value::<String>(value).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The arguments of a data server on `port`: loopback, nothing on disk, and
/// a replica's first sync at once.
fn data_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dbfilename",
        &format!("dump-{port}.rdb"),
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A Redis Cluster of three primaries, each with a replica.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    servers: Vec<Server>,
    dir: PathBuf,
}

impl PrivateRedisCluster {
    pub fn start() -> PrivateRedisCluster {
        let dir = temp_dir("wxlogin_cluster");
        let servers: Vec<Server> = (0..6)
            .map(|_| {
                Server::start(&dir, |port, bus| {
                    let mut args = data_args(port);
                    args.extend(
                        [
                            "--cluster-port",
                            &bus.to_string(),
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            &format!("nodes-{port}.conf"),
                            "--cluster-node-timeout",
                            "1000",
                        ]
                        .map(str::to_owned),
                    );
                    args
                })
            })
            .collect();
        let cluster = PrivateRedisCluster { servers, dir };
        let nodes: Vec<String> = cluster
            .servers
            .iter()
            .map(|server| format!("127.0.0.1:{}", server.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create (Debian's redis-tools)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .servers
            .iter()
            .map(|server| format!("127.0.0.1:{}", server.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.servers
            .iter()
            .filter(|server| server.child.is_some())
            .map(|server| server.port)
            .collect()
    }

    /// Waits until every live node says the cluster is ok, every slot is
    /// served by a live primary, and every replica is in sync with its
    /// primary (a replica that is not cannot take over).
    pub fn wait_healthy(&self, limit: Duration) {
        wait_until(limit, "the Redis Cluster to be ok", || {
            self.live_ports().iter().all(|&port| {
                let replication = text(port, &["INFO", "replication"]);
                text(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            }) && self.primaries().len() == 3
        });
    }

    /// The ports of the live primaries, as the live nodes see them.
    pub fn primaries(&self) -> Vec<u16> {
        let live = self.live_ports();
        let Some(&asked) = live.first() else {
            return Vec::new();
        };
        let nodes = text(asked, &["CLUSTER", "NODES"]);
        let mut primaries: Vec<u16> = nodes
            .lines()
            .filter(|line| {
                let flags = line.split(' ').nth(2).unwrap_or("");
                flags.contains("master") && !flags.contains("fail")
            })
            .filter_map(|line| {
                let address = line.split(' ').nth(1)?;
                let port = address.split('@').next()?.rsplit(':').next()?;
                port.parse().ok()
            })
            .filter(|port| live.contains(port))
            .collect();
        primaries.sort_unstable();
        primaries
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        for server in &mut self.servers {
            if server.port == port {
                server.kill();
            }
        }
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        self.servers.clear();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// The name the sentinels know the primary by.
pub const SENTINEL_SERVICE: &str = "wxlogin";

/// A primary, its replica, and three sentinels watching them (quorum 2).
#[derive(Debug)]
pub struct PrivateRedisSentinel {
    data: Vec<Server>,
    sentinels: Vec<Server>,
    dir: PathBuf,
}

impl PrivateRedisSentinel {
    pub fn start() -> PrivateRedisSentinel {
        let dir = temp_dir("wxlogin_sentinel");
        let data_server = |replica_of: Option<u16>| {
            Server::start(&dir, |port, _| {
                let mut args = data_args(port);
                if let Some(primary) = replica_of {
                    args.extend([
                        "--replicaof".to_owned(),
                        "127.0.0.1".to_owned(),
                        primary.to_string(),
                    ]);
                }
                args
            })
        };
        let primary = data_server(None);
        let primary_port = primary.port;
        let replica = data_server(Some(primary_port));
        let sentinels = (0..3)
            .map(|_| {
                Server::start(&dir, |port, _| {
                    let conf = dir.join(format!("sentinel-{port}.conf"));
                    std::fs::write(
                        &conf,
                        format!(
                            "port {port}\nbind 127.0.0.1\ndir {}\n\
                             sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 2\n\
                             sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                             sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                             sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                            dir.display()
                        ),
                    )
                    .expect("write a sentinel's config");
                    vec![conf.to_string_lossy().into_owned(), "--sentinel".to_owned()]
                })
            })
            .collect();
        let setup = PrivateRedisSentinel {
            data: vec![primary, replica],
            sentinels,
            dir,
        };
        // The replica has synced and every sentinel knows both.
        wait_until(Duration::from_secs(30), "the Sentinel setup", || {
            text(setup.data[1].port, &["INFO", "replication"]).contains("master_link_status:up")
                && setup.sentinels.iter().all(|sentinel| {
                    let replicas =
                        query(sentinel.port, &["SENTINEL", "REPLICAS", SENTINEL_SERVICE]);
                    matches!(replicas, Ok(redis::Value::Array(list)) if !list.is_empty())
                })
        });
        setup
    }

    /// `redis+sentinel://` with the three sentinels.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!(
            "redis+sentinel://{}/{SENTINEL_SERVICE}",
            sentinels.join(",")
        )
    }

    /// The port of the server the sentinels name as primary.
    pub fn primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|sentinel| {
            let answer = query(
                sentinel.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE],
            )
            .ok()?;
            let address: Vec<String> = redis::from_redis_value(answer).ok()?;
            address.get(1)?.parse().ok()
        })
    }

    /// Kills (SIGKILL) the primary; answers its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary().expect("the sentinels name a primary");
        for server in &mut self.data {
            if server.port == port {
                server.kill();
            }
        }
        port
    }
}

impl Drop for PrivateRedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.data.clear();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}
