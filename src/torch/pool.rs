//! A fixed pool of OS threads that own all libtorch work.
//!
//! libtorch calls block for milliseconds to seconds, so they never run on the async runtime.
//! Jobs go through a bounded queue: when it is full the caller is told at once (the HTTP layer
//! answers 503 with Retry-After) instead of queueing forever. Tensors never leave a worker; jobs
//! return plain data.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The queue is full; retry later.
    Busy { queue: usize },
    /// The job panicked (a libtorch error surfaced as a panic by tch). Message included.
    Panicked(String),
}

#[derive(Default)]
pub struct PoolStats {
    pub queued: AtomicUsize,
    pub busy: AtomicUsize,
    pub completed: AtomicU64,
    pub rejected: AtomicU64,
    /// Total seconds spent in jobs, in microseconds.
    pub run_micros: AtomicU64,
}

pub struct TorchPool {
    tx: SyncSender<Job>,
    workers: usize,
    queue: usize,
    pub stats: Arc<PoolStats>,
}

impl TorchPool {
    /// Starts `workers` threads sharing a queue of at most `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> TorchPool {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(PoolStats::default());
        for i in 0..workers.max(1) {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            std::thread::Builder::new()
                .name(format!("torch-worker-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => {
                            job();
                            // Grad mode is thread-local and tch::no_grad does not restore it when
                            // its closure panics: start every job from the default state.
                            unsafe { torch_sys::at_grad_set_enabled(1) };
                        }
                        Err(_) => return, // pool dropped
                    }
                })
                .expect("spawn torch worker");
        }
        TorchPool {
            tx,
            workers: workers.max(1),
            queue,
            stats,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue
    }

    /// Runs `f` on a worker and awaits its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let stats = self.stats.clone();
        let job: Job = Box::new(move || {
            stats.queued.fetch_sub(1, Ordering::SeqCst);
            stats.busy.fetch_add(1, Ordering::SeqCst);
            let started = std::time::Instant::now();
            let out = catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                PoolError::Panicked(msg)
            });
            stats.run_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            stats.busy.fetch_sub(1, Ordering::SeqCst);
            stats.completed.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(out);
        });
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Busy { queue: self.queue });
            }
        }
        result.await.unwrap_or_else(|_| Err(PoolError::Panicked("worker vanished".into())))
    }
}
