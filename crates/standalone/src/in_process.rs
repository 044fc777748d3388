//! One service run in this process, in a task of its own: built from its
//! settings, stopped on request, started again where it listened.

use std::{error::Error as StdError, future::Future, net::SocketAddr, pin::Pin};

use tokio::{
    sync::{mpsc::UnboundedSender, oneshot},
    task::JoinHandle,
};
use wxlogin_common::config::Source;

use crate::{error::Error, service::Service};

/// A service's configuration, read once: a restart reuses it.
#[derive(Clone)]
enum Config {
    Auth(wxlogin_auth::Config),
    User(wxlogin_user::Config),
    Gateway(wxlogin_gateway::Config),
}

/// How a service's run ended.
type Outcome = Result<(), Box<dyn StdError + Send + Sync>>;
type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Config {
    fn read(service: Service, source: &dyn Source) -> Result<Config, Error> {
        Ok(match service {
            Service::Auth => Config::Auth(wxlogin_auth::Config::from_source(source)?),
            Service::User => Config::User(wxlogin_user::Config::from_source(source)?),
            Service::Gateway => Config::Gateway(wxlogin_gateway::Config::from_source(source)?),
        })
    }

    fn listen_at(&mut self, addr: SocketAddr) {
        match self {
            Config::Auth(config) => config.listen_addr = addr,
            Config::User(config) => config.listen_addr = addr,
            Config::Gateway(config) => config.listen_addr = addr,
        }
    }

    /// Builds the service (it listens once this returns) and answers where
    /// it listens and its run, which ends when `stopped` completes.
    async fn build(
        self,
        stopped: Stopped,
    ) -> Result<(SocketAddr, Pin<Box<dyn Future<Output = Outcome> + Send>>), Error> {
        fn boxed<E: StdError + Send + Sync + 'static>(
            run: impl Future<Output = Result<(), E>> + Send + 'static,
        ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
            Box::pin(async move { run.await.map_err(Into::into) })
        }
        Ok(match self {
            Config::Auth(config) => {
                let app = wxlogin_auth::Application::build(config).await?;
                (app.local_addr(), boxed(app.run_until_stopped(stopped)))
            }
            Config::User(config) => {
                let app = wxlogin_user::Application::build(config).await?;
                (app.local_addr(), boxed(app.run_until_stopped(stopped)))
            }
            Config::Gateway(config) => {
                let app = wxlogin_gateway::Application::build(config).await?;
                (app.local_addr(), boxed(app.run_until_stopped(stopped)))
            }
        })
    }
}

/// Which run of which replica ended: (service, replica, run).
pub(crate) type EndedRun = (Service, usize, u64);

/// Tells the owner that a task ended, however it ended (a panic too).
struct Ended {
    to: UnboundedSender<EndedRun>,
    which: EndedRun,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.to.send(self.which);
    }
}

/// A service running in a task of this process.
pub(crate) struct InProcess {
    service: Service,
    index: usize,
    /// Counts its runs, so that the end of one stopped before a restart is
    /// not taken for the end of the next.
    generation: u64,
    /// Its configuration, at the address it first listened on.
    config: Config,
    /// Asks it to stop; dropped, it does the same.
    stop: Option<oneshot::Sender<()>>,
    /// Until awaited.
    task: Option<JoinHandle<Outcome>>,
}

impl InProcess {
    /// Reads its configuration from `source`, builds it and runs it;
    /// answers where it listens.
    pub(crate) async fn start(
        service: Service,
        index: usize,
        source: &dyn Source,
        ended: UnboundedSender<EndedRun>,
    ) -> Result<(SocketAddr, InProcess), Error> {
        let config = Config::read(service, source)?;
        let mut run = InProcess {
            service,
            index,
            generation: 0,
            config,
            stop: None,
            task: None,
        };
        let addr = run.run(ended).await?;
        // A restart listens where this one does, port 0 or not.
        run.config.listen_at(addr);
        Ok((addr, run))
    }

    async fn run(&mut self, ended: UnboundedSender<EndedRun>) -> Result<SocketAddr, Error> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, run) = self
            .config
            .clone()
            .build(Box::pin(async move {
                drop(stopped.await);
            }))
            .await?;
        self.generation += 1;
        let signal = Ended {
            to: ended,
            which: (self.service, self.index, self.generation),
        };
        self.task = Some(tokio::spawn(async move {
            let _signal = signal;
            run.await
        }));
        self.stop = Some(stop);
        Ok(addr)
    }

    /// Asks it to stop, and waits until it has; answers how its run ended.
    pub(crate) async fn stop(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            None => Ok(()),
            Some(task) => match task.await {
                Ok(Ok(())) => Ok(()),
                outcome => Err(Error::Stopped(format!(
                    "{}: {outcome:?}",
                    self.service.name()
                ))),
            },
        }
    }

    /// Drops it where it stands.
    pub(crate) fn abort(&mut self) {
        self.stop = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Starts it again (stopping it first if it runs), where it listened.
    pub(crate) async fn restart(&mut self, ended: UnboundedSender<EndedRun>) -> Result<(), Error> {
        self.stop().await?;
        self.run(ended).await.map(drop)
    }

    /// How run `generation` ended, when it is the current one and ended
    /// without being asked to (`None` when it was asked, or already told).
    pub(crate) async fn ended_by_itself(&mut self, generation: u64) -> Option<String> {
        if self.stop.is_none() || generation != self.generation {
            return None;
        }
        let task = self.task.take()?;
        self.stop = None;
        Some(format!("{:?}", task.await))
    }
}
