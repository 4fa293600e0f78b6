//! `/readyz` that a flood cannot turn into database load: every caller
//! gets the latest check's result while it is younger than `max_age`;
//! past it, the first caller starts one check and every caller meanwhile
//! waits for that same check (single flight). So the database sees at most
//! one readiness check per `max_age`, however many probes arrive.
//!
//! A check that overruns its time limit answers "did not answer" to its
//! callers, but what it started (a blocking thread, a queued write) runs on
//! until it ends; the next check waits for it instead of piling up another.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

/// How old a result `/readyz` may answer from.
pub const MAX_AGE: Duration = Duration::from_secs(1);

type Outcome = Result<(), String>;

pub struct Readiness {
    max_age: Duration,
    latest: Mutex<Latest>,
    /// One check at the database at a time, including one that overran.
    at_database: Arc<Semaphore>,
}

#[derive(Default)]
struct Latest {
    /// When the last finished check started, and what it found.
    result: Option<(Instant, Outcome)>,
    /// The check under way, for callers to wait on.
    in_flight: Option<watch::Receiver<Option<Outcome>>>,
}

impl Readiness {
    pub fn new(max_age: Duration) -> Readiness {
        Readiness { max_age, latest: Mutex::new(Latest::default()), at_database: Arc::new(Semaphore::new(1)) }
    }

    /// The latest result if fresh, else that of the check under way, else
    /// of a new one: `check()` (called only then), given at most `limit`
    /// from when it could start; `report` is then told its outcome (a
    /// timeout included) once, for the logs and metrics. Runs on a tokio
    /// runtime.
    pub async fn ready<F, C, R>(self: &Arc<Self>, limit: Duration, check: C, report: R) -> Outcome
    where
        C: FnOnce() -> F,
        F: Future<Output = Outcome> + Send + 'static,
        R: FnOnce(&Outcome) + Send + 'static,
    {
        let mut answer = {
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((started, result)) = &latest.result
                && started.elapsed() < self.max_age
            {
                return result.clone();
            }
            match &latest.in_flight {
                Some(answer) => answer.clone(),
                None => {
                    let (tell, answer) = watch::channel(None);
                    latest.in_flight = Some(answer.clone());
                    // Its own task: a caller that gives up (its client went
                    // away) must not leave the check unfinished for the rest.
                    tokio::spawn(Arc::clone(self).run(limit, check(), report, tell));
                    answer
                }
            }
        };
        match answer.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or_else(|| Err("readiness check gave no result".into())),
            Err(_) => Err("readiness check ended without a result".into()),
        }
    }

    async fn run<F, R>(self: Arc<Self>, limit: Duration, check: F, report: R, tell: watch::Sender<Option<Outcome>>)
    where
        F: Future<Output = Outcome> + Send + 'static,
        R: FnOnce(&Outcome),
    {
        let started = Instant::now();
        let at_database = Arc::clone(&self.at_database);
        let bounded = tokio::time::timeout(limit, async move {
            // Waits here while an overrun check still holds the database.
            let turn = at_database.acquire_owned().await.map_err(|_| "readiness checks closed".to_string())?;
            let checking = tokio::spawn(async move {
                let outcome = check.await;
                drop(turn);
                outcome
            });
            checking.await.map_err(|e| format!("readiness check failed: {e}"))?
        });
        let outcome = bounded.await.unwrap_or_else(|_| Err(format!("database did not answer within {limit:?}")));
        report(&outcome);
        {
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            latest.result = Some((started, outcome.clone()));
            latest.in_flight = None;
        }
        let _ = tell.send(Some(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    /// A check that counts its runs and takes `takes`.
    fn counted(
        runs: &Arc<AtomicUsize>,
        takes: Duration,
        outcome: Outcome,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let runs = Arc::clone(runs);
        move || {
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                outcome
            })
        }
    }

    #[test]
    fn concurrent_callers_share_one_check_and_its_result_is_reused_while_fresh() {
        let runs = Arc::new(AtomicUsize::new(0));
        let readiness = Arc::new(Readiness::new(Duration::from_millis(300)));
        runtime().block_on(async {
            let callers: Vec<_> = (0..200)
                .map(|_| {
                    let (readiness, runs) = (Arc::clone(&readiness), Arc::clone(&runs));
                    tokio::spawn(async move {
                        readiness
                            .ready(Duration::from_secs(5), counted(&runs, Duration::from_millis(50), Ok(())), |_| {})
                            .await
                    })
                })
                .collect();
            for caller in callers {
                assert_eq!(caller.await.unwrap(), Ok(()));
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "200 concurrent callers, one check");
            let fresh =
                readiness.ready(Duration::from_secs(5), counted(&runs, Duration::ZERO, Err("down".into())), |_| {});
            assert_eq!(fresh.await, Ok(()));
            assert_eq!(runs.load(Ordering::SeqCst), 1, "a fresh result is answered from");
            tokio::time::sleep(Duration::from_millis(350)).await;
            let stale =
                readiness.ready(Duration::from_secs(5), counted(&runs, Duration::ZERO, Err("down".into())), |_| {});
            assert_eq!(stale.await, Err("down".into()), "past max_age a new check runs");
            assert_eq!(runs.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn a_check_past_its_limit_fails_and_the_next_waits_for_it_instead_of_running_beside_it() {
        let runs = Arc::new(AtomicUsize::new(0));
        let readiness = Arc::new(Readiness::new(Duration::ZERO));
        runtime().block_on(async {
            let (reports, reported) = std::sync::mpsc::channel();
            let slow = readiness.ready(
                Duration::from_millis(100),
                counted(&runs, Duration::from_millis(600), Ok(())),
                move |outcome: &Outcome| reports.send(outcome.clone()).unwrap(),
            );
            let err = slow.await.unwrap_err();
            assert!(err.contains("did not answer within 100ms"), "{err}");
            assert_eq!(reported.try_recv().unwrap(), Err(err), "the timeout is reported, once");
            // The overrun check still holds the database: the next one
            // times out waiting for its turn, without running.
            let next = readiness.ready(Duration::from_millis(100), counted(&runs, Duration::ZERO, Ok(())), |_| {});
            assert!(next.await.is_err());
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            tokio::time::sleep(Duration::from_millis(600)).await;
            let after = readiness.ready(Duration::from_millis(100), counted(&runs, Duration::ZERO, Ok(())), |_| {});
            assert_eq!(after.await, Ok(()));
            assert_eq!(runs.load(Ordering::SeqCst), 2);
        });
    }
}
