//! Gathering concurrent logins' upserts into multi-row statements: the
//! queue they wait in, how a batch is formed (one login per user, at most
//! [`MAX_GATHERED`]), how many batches run at once, and how each waiting
//! login gets its answer.
//!
//! It owns the batching only: what a batch runs (the statements) is the
//! caller's, handed to [`start`] as a function, so this module knows
//! nothing of the users table.

use std::{
    collections::{HashSet, VecDeque},
    future::Future,
    sync::Arc,
};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::Error;

/// The most logins one gathered statement carries.
const MAX_GATHERED: usize = 64;
/// How many gathered statements run at once. While they all run, new
/// logins wait and are gathered: the busier the database, the larger the
/// statements, and the fewer commits per login.
const GATHERED_AT_ONCE: usize = 2;

/// One login's upsert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LoginOf {
    pub appid: String,
    pub openid: String,
    pub unionid: Option<String>,
}

/// An upsert waiting to be gathered, and where its answer (a `T`) goes.
#[derive(Debug)]
pub(crate) struct Waiting<T> {
    pub login: LoginOf,
    pub answer: oneshot::Sender<Result<T, Error>>,
}

/// Where upserts wait to be gathered.
pub(crate) type Queue<T> = mpsc::UnboundedSender<Waiting<T>>;

/// Starts the task that takes waiting upserts and runs them,
/// [`GATHERED_AT_ONCE`] batches at a time, each with every upsert that
/// waited (up to [`MAX_GATHERED`], one per user: a second login of a user
/// waits for the next batch). `run` answers a batch in its order, or fails
/// it as a whole. The task ends when the last sender of the queue is gone,
/// so `run` must hold none. Must be called inside a tokio runtime.
pub(crate) fn start<T, R, F>(run: R) -> Queue<T>
where
    T: Send + 'static,
    R: Fn(Vec<LoginOf>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Vec<T>, Error>> + Send + 'static,
{
    let (queue, waiting) = mpsc::unbounded_channel();
    tokio::spawn(gather(Arc::new(run), waiting));
    queue
}

async fn gather<T, R, F>(run: Arc<R>, mut waiting: mpsc::UnboundedReceiver<Waiting<T>>)
where
    T: Send + 'static,
    R: Fn(Vec<LoginOf>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Vec<T>, Error>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(GATHERED_AT_ONCE));
    let mut later: VecDeque<Waiting<T>> = VecDeque::new();
    loop {
        let first = match later.pop_front() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut users = HashSet::from([(first.login.appid.clone(), first.login.openid.clone())]);
        let mut batch = vec![first];
        let mut add =
            |next: Waiting<T>, batch: &mut Vec<Waiting<T>>, later: &mut VecDeque<Waiting<T>>| {
                if users.insert((next.login.appid.clone(), next.login.openid.clone())) {
                    batch.push(next);
                } else {
                    later.push_back(next);
                }
            };
        for _ in 0..later.len() {
            if batch.len() == MAX_GATHERED {
                break;
            }
            if let Some(next) = later.pop_front() {
                add(next, &mut batch, &mut later);
            }
        }
        while batch.len() < MAX_GATHERED
            && let Ok(next) = waiting.try_recv()
        {
            add(next, &mut batch, &mut later);
        }
        let run = run.clone();
        tokio::spawn(async move {
            let logins = batch.iter().map(|waiting| waiting.login.clone()).collect();
            let answered = run(logins).await;
            answer(batch, answered);
            drop(slot);
        });
    }
}

/// Gives each upsert of `batch` its answer: its own, or the batch's error
/// (the error itself to a batch of one, a copy to each of a larger one).
fn answer<T>(batch: Vec<Waiting<T>>, answered: Result<Vec<T>, Error>) {
    match answered {
        Ok(upserted) => {
            for (waiting, upserted) in batch.into_iter().zip(upserted) {
                let _ = waiting.answer.send(Ok(upserted));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(only) = batch.into_iter().next() {
                let _ = only.answer.send(Err(error));
            }
        }
        Err(error) => {
            for waiting in batch {
                let _ = waiting.answer.send(Err(error.for_another()));
            }
        }
    }
}
