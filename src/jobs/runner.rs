//! The one loop every background job runs in. A queue job claims due items with a lease (so any
//! replica can take them and a crash only delays them), runs at most `slots` at once, sleeps until
//! the next item falls due (at most `POLL`, so work another replica left is seen) or until it is
//! woken, and on shutdown stops claiming and lets the items it holds finish. A periodic job runs
//! once at start and then every interval.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};

use crate::{
    clock::Clock,
    metrics::Metrics,
    store::{Claimed, StoreError},
};

/// Longest sleep between claims, so work left by another replica or a crash is picked up.
const POLL: Duration = Duration::from_secs(1);

/// Shortest sleep between claims, so an item due now but not claimable (still leased) does not
/// spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(50);

/// How one run of a job ended, as counted in `vacme_job_runs_total{job,outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The item reached its end (a challenge valid or invalid, an order signed or refused).
    Done,
    /// It did not finish this time and comes back (backoff, a later run of another job).
    Retry,
    /// It failed and this job does not retry it (the result could not be recorded; the lease
    /// running out or the next request brings it back).
    Error,
}

impl Outcome {
    /// Every outcome, so each series exists from the start.
    pub const ALL: [Outcome; 3] = [Outcome::Done, Outcome::Retry, Outcome::Error];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry => "retry",
            Outcome::Error => "error",
        }
    }
}

/// A queue of due work, claimed in batches and run one item per task.
pub trait Job: Send + Sync + 'static {
    /// One claimed piece of work.
    type Item: Send + 'static;

    /// The job's name in logs and metrics (`validation`, `issuance`, ...).
    fn name(&self) -> &'static str;

    /// What wakes the runner before the next due time: a handler recorded new work.
    fn wake(&self) -> &Notify;

    /// Claims up to `n` items due at `now`, held until `lease_until`; an error is logged and
    /// the claim is tried again after the next sleep.
    fn claim(
        &self,
        now: i64,
        lease_until: i64,
        n: usize,
    ) -> impl Future<Output = Result<Claimed<Self::Item>, StoreError>> + Send;

    /// Whether items are leased in the store (`lease_id` names them), so the runner renews
    /// their leases while they run and counts take-overs.
    const STORE_LEASES: bool = false;

    /// The store key of an item's lease, renewed while the item runs.
    fn lease_id(&self, _item: &Self::Item) -> Option<String> {
        None
    }

    /// Extends the leases of the running items `ids` to `lease_until`.
    fn renew(&self, _ids: Vec<String>, _lease_until: i64) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    /// When the next item falls due (`None`: nothing is queued, or it cannot tell).
    fn next_due(&self) -> impl Future<Output = Option<i64>> + Send;

    /// Does one item and records its result.
    fn run(&self, item: Self::Item) -> impl Future<Output = Outcome> + Send;

    /// Called after every item, whatever its outcome (to tell waiters).
    fn finished(&self) {}
}

/// Work done every interval rather than per item.
pub trait Periodic: Send + Sync + 'static {
    /// The job's name in logs and metrics.
    fn name(&self) -> &'static str;

    /// Time between the end of one run and the start of the next.
    fn interval(&self) -> Duration;

    /// One run; errors are logged and reported as its outcome, never fatal.
    fn tick(&self) -> impl Future<Output = Outcome> + Send;
}

/// How much of a queue job runs at once.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    /// Items run at the same time.
    pub slots: usize,
    /// Lease on a claimed item. A job with `STORE_LEASES` renews it every third of this while
    /// the item runs, so it may be short: it is how long a dead replica's work waits for another.
    /// Other jobs hold it for the whole run, so it must be longer than one run can take.
    pub lease_secs: i64,
}

/// The lease of validations and signings: renewed every 2 s while they run, so a live replica
/// takes over a dead one's work 5 to 8 s after it died (what was left of the lease, the
/// lease's whole-second end, then the next poll).
pub const RENEWED_LEASE_SECS: i64 = 6;

/// Runs jobs: what every job shares (time and metrics).
#[derive(Clone, Debug)]
pub struct Runner {
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

impl Runner {
    /// Runs a queue job until `shutdown` resolves, then waits for the items it holds.
    pub async fn queue<J: Job>(self, job: J, slots: Slots, shutdown: impl Future<Output = ()>) {
        let job = Arc::new(job);
        let name = job.name();
        self.metrics.expect_job_runs(name, &Outcome::ALL.map(Outcome::as_str));
        if J::STORE_LEASES {
            self.metrics.expect_takeovers(name);
        }
        let permits = Arc::new(Semaphore::new(slots.slots));
        // Lease keys of the items running here: renewed together, and never run twice at once.
        let held: Arc<Mutex<HashSet<String>>> = Arc::default();
        let renew_every = Duration::from_secs((slots.lease_secs / 3).max(1) as u64);
        let mut renewed = Instant::now();
        let mut running = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let free = permits.available_permits();
            if free > 0 {
                let now = self.clock.unix();
                match job.claim(now, now + slots.lease_secs, free).await {
                    Ok(claimed) => {
                        if claimed.taken_over > 0 {
                            self.metrics.takeovers(name, claimed.taken_over as u64);
                            tracing::info!(
                                job = name,
                                items = claimed.taken_over,
                                "took over work whose lease ran out (its worker died or stalled)"
                            );
                        }
                        for item in claimed.items {
                            let key = job.lease_id(&item);
                            if let Some(k) = &key
                                && !lock(&held).insert(k.clone())
                            {
                                // Its lease ran out while it runs here: it is ours again, not twice.
                                continue;
                            }
                            // An item beyond the free slots (the claim asked for no more) waits
                            // for a slot rather than sitting leased until the lease ends.
                            let slot = permits.clone().try_acquire_owned().ok();
                            let permits = permits.clone();
                            let job = job.clone();
                            let metrics = self.metrics.clone();
                            let held = held.clone();
                            running.spawn(async move {
                                let permit = match slot {
                                    Some(permit) => permit,
                                    None => match permits.acquire_owned().await {
                                        Ok(permit) => permit,
                                        Err(_) => return,
                                    },
                                };
                                let started = Instant::now();
                                let outcome = job.run(item).await;
                                metrics.job_run(job.name(), outcome.as_str(), started.elapsed());
                                if let Some(k) = key {
                                    lock(&held).remove(&k);
                                }
                                drop(permit);
                                job.finished();
                                job.wake().notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::error!(job = name, error = %e, "cannot claim work"),
                }
            }
            while running.try_join_next().is_some() {}
            if J::STORE_LEASES && renewed.elapsed() >= renew_every {
                self.renew(&*job, &held, slots.lease_secs).await;
                renewed = Instant::now();
            }
            let mut sleep = self.until(job.next_due().await);
            if J::STORE_LEASES {
                sleep = sleep.min(renew_every);
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = job.wake().notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        // The items still running keep their leases until they finish.
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = tokio::time::sleep(renew_every), if J::STORE_LEASES => {
                    self.renew(&*job, &held, slots.lease_secs).await;
                }
            }
        }
    }

    /// Renews the leases of the items running here; a failure is logged (the next renewal, or
    /// the item's end, comes before the lease runs out unless the store stays down).
    async fn renew<J: Job>(&self, job: &J, held: &Mutex<HashSet<String>>, lease_secs: i64) {
        let ids: Vec<String> = lock(held).iter().cloned().collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = job.renew(ids, self.clock.unix() + lease_secs).await {
            tracing::warn!(job = job.name(), error = %e, "cannot renew the leases of running work");
        }
    }

    /// Runs a periodic job once at start, then every interval, until `shutdown` resolves; a run
    /// in progress finishes first.
    pub async fn periodic<P: Periodic>(self, job: P, shutdown: impl Future<Output = ()>) {
        self.metrics.expect_job_runs(job.name(), &Outcome::ALL.map(Outcome::as_str));
        tokio::pin!(shutdown);
        loop {
            let started = Instant::now();
            let outcome = job.tick().await;
            self.metrics.job_run(job.name(), outcome.as_str(), started.elapsed());
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(job.interval()) => {}
            }
        }
    }

    /// How long to sleep when the next item is due at `due`.
    fn until(&self, due: Option<i64>) -> Duration {
        match due {
            Some(due) => {
                let secs = (due - self.clock.unix()).clamp(0, POLL.as_secs() as i64);
                Duration::from_secs(secs as u64).max(MIN_SLEEP)
            }
            None => POLL,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 1, 2, 4, ... seconds, at most `cap_secs`: the wait before retry number `attempts + 1`.
pub fn backoff(attempts: i64, cap_secs: i64) -> i64 {
    (1i64 << attempts.clamp(0, 30)).min(cap_secs)
}

/// Most items a `MemoryQueue` holds; past it, new ones are dropped (their intent is in the store,
/// or the asker stops waiting).
const MAX_QUEUED: usize = 10_000;

/// A queue held in this process, for work whose intent is already in the store (a revocation the
/// CA was not told yet) or that a request waits for (a CA check). Claimed items leave the queue,
/// so the lease is the task itself.
#[derive(Debug)]
pub struct MemoryQueue<T> {
    /// (due, item), in the order pushed.
    items: Mutex<VecDeque<(i64, T)>>,
    wake: Notify,
}

impl<T> Default for MemoryQueue<T> {
    fn default() -> Self {
        Self { items: Mutex::new(VecDeque::new()), wake: Notify::new() }
    }
}

impl<T> MemoryQueue<T> {
    /// Queues `item` to run at `due` and wakes the runner; `false` (and `item` dropped) when the
    /// queue is full.
    pub fn push(&self, due: i64, item: T) -> bool {
        {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            if items.len() >= MAX_QUEUED {
                return false;
            }
            items.push_back((due, item));
        }
        self.wake.notify_one();
        true
    }

    /// Takes up to `n` items due at `now`, oldest first.
    pub fn take_due(&self, now: i64, n: usize) -> Vec<T> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        let mut i = 0;
        while i < items.len() && taken.len() < n {
            if items[i].0 <= now {
                if let Some((_, item)) = items.remove(i) {
                    taken.push(item);
                }
            } else {
                i += 1;
            }
        }
        taken
    }

    /// When the earliest item falls due.
    pub fn next_due(&self) -> Option<i64> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(due, _)| *due).min()
    }

    /// What wakes the runner of this queue.
    pub fn wake(&self) -> &Notify {
        &self.wake
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!((0..8).map(|a| backoff(a, 60)).collect::<Vec<_>>(), [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(-3, 10), 1);
        assert_eq!(backoff(i64::MAX, 10), 10);
    }

    #[test]
    fn memory_queue_hands_out_due_items_in_order() {
        let q = MemoryQueue::default();
        assert_eq!(q.next_due(), None);
        q.push(10, "late");
        q.push(5, "a");
        q.push(5, "b");
        q.push(5, "c");
        assert_eq!(q.next_due(), Some(5));
        assert_eq!(q.take_due(4, 10), Vec::<&str>::new());
        assert_eq!(q.take_due(5, 2), ["a", "b"]);
        assert_eq!(q.take_due(9, 10), ["c"]);
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.take_due(10, 10), ["late"]);
        assert_eq!(q.next_due(), None);
    }

    /// Counts items run at once and in all.
    struct Counting {
        queue: MemoryQueue<u32>,
        now: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
    }

    impl Job for Arc<Counting> {
        type Item = u32;
        fn name(&self) -> &'static str {
            "test"
        }
        fn wake(&self) -> &Notify {
            self.queue.wake()
        }
        async fn claim(&self, now: i64, _: i64, n: usize) -> Result<Claimed<u32>, StoreError> {
            Ok(self.queue.take_due(now, n).into())
        }
        async fn next_due(&self) -> Option<i64> {
            self.queue.next_due()
        }
        async fn run(&self, _: u32) -> Outcome {
            let at_once = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(at_once, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.done.fetch_add(1, Ordering::SeqCst);
            Outcome::Done
        }
    }

    /// Items whose claim offers again the ones still running (as a store does once their lease
    /// ran out), and that record the renewals they get.
    #[derive(Default)]
    struct Leasing {
        queue: MemoryQueue<u32>,
        running: Mutex<HashSet<u32>>,
        runs: AtomicUsize,
        renewals: Mutex<Vec<(Vec<String>, i64)>>,
    }

    impl Job for Arc<Leasing> {
        type Item = u32;
        const STORE_LEASES: bool = true;
        fn name(&self) -> &'static str {
            "leasing"
        }
        fn wake(&self) -> &Notify {
            self.queue.wake()
        }
        async fn claim(&self, now: i64, _: i64, n: usize) -> Result<Claimed<u32>, StoreError> {
            let mut items = self.queue.take_due(now, n);
            items.extend(lock(&self.running).iter().copied());
            Ok(Claimed { taken_over: items.len(), items })
        }
        async fn next_due(&self) -> Option<i64> {
            self.queue.next_due()
        }
        fn lease_id(&self, item: &u32) -> Option<String> {
            Some(item.to_string())
        }
        async fn renew(&self, mut ids: Vec<String>, lease_until: i64) -> Result<(), StoreError> {
            ids.sort();
            lock(&self.renewals).push((ids, lease_until));
            Ok(())
        }
        async fn run(&self, item: u32) -> Outcome {
            lock(&self.running).insert(item);
            self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3500)).await;
            lock(&self.running).remove(&item);
            Outcome::Done
        }
    }

    /// While items run, their leases are renewed every third of the lease; an item offered
    /// again while it runs here is not run twice; take-overs are counted.
    #[tokio::test]
    async fn renews_the_leases_of_running_items_and_never_runs_one_twice() {
        let job = Arc::new(Leasing::default());
        let metrics = Arc::new(Metrics::default());
        let runner = Runner { clock: Arc::new(SystemClock), metrics: metrics.clone() };
        job.queue.push(0, 1);
        job.queue.push(0, 2);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = SystemClock.unix();
        let task = tokio::spawn(runner.queue(job.clone(), Slots { slots: 4, lease_secs: 3 }, async move {
            let _ = stopped.await;
        }));
        tokio::time::sleep(Duration::from_millis(2200)).await;
        stop.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(job.runs.load(Ordering::SeqCst), 2, "each item ran once, though offered again while running");
        let renewals = lock(&job.renewals).clone();
        assert!(renewals.len() >= 3, "renewed every second while running, also while draining: {renewals:?}");
        for (ids, until) in &renewals {
            assert_eq!(ids, &["1", "2"]);
            assert!((started + 3..=started + 7).contains(until), "{until} vs {started}");
        }
        let text = metrics.render(&Default::default());
        let takeovers = text
            .lines()
            .find_map(|l| l.strip_prefix("vacme_job_takeovers_total{job=\"leasing\"} "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(takeovers.is_some_and(|n| n >= 2), "{text}");
    }

    #[tokio::test]
    async fn runs_within_its_slots_and_drains_on_shutdown() {
        let job = Arc::new(Counting {
            queue: MemoryQueue::default(),
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        });
        let metrics = Arc::new(Metrics::default());
        let runner = Runner { clock: Arc::new(SystemClock), metrics: metrics.clone() };
        for i in 0..10 {
            job.queue.push(0, i);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.queue(job.clone(), Slots { slots: 3, lease_secs: 10 }, async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(Duration::from_secs(5), async {
            while job.done.load(Ordering::SeqCst) < 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(job.most.load(Ordering::SeqCst), 3, "never more than the slots at once");
        // Work queued just before shutdown that was claimed finishes before the runner returns.
        job.queue.push(0, 99);
        tokio::time::sleep(Duration::from_millis(5)).await;
        stop.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(job.now.load(Ordering::SeqCst), 0, "nothing left running");
        let text = metrics.render(&Default::default());
        let done = text
            .lines()
            .find_map(|l| l.strip_prefix("vacme_job_runs_total{job=\"test\",outcome=\"done\"} "))
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(done, Some(job.done.load(Ordering::SeqCst)), "{text}");
        assert!(text.contains("vacme_job_runs_total{job=\"test\",outcome=\"retry\"} 0\n"), "{text}");
    }
}
