//! [`Helper`]: a thread that runs pure computations beside the writer, so that a large
//! write uses the machine's second core instead of leaving it idle.
//!
//! Why a thread kept for the store's life rather than one per write: starting a thread
//! took ~250 µs before it ran anything (measured inside a 100-op local write whose
//! domain work is ~400 µs), which ate the whole gain; a parked thread starts on a job
//! in ~40 µs.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs on one thread of its own, started at first use and ended when the
/// helper is dropped (its queue closes).
#[derive(Default)]
pub(crate) struct Helper {
    jobs: Mutex<Option<Sender<Job>>>,
}

/// The result of a job handed to [`Helper::spawn`].
pub(crate) struct Pending<T> {
    rx: Receiver<T>,
}

impl<T> Pending<T> {
    /// Waits for the result; `None` if the job panicked.
    pub(crate) fn wait(self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl Helper {
    /// Queues `f` on the helper thread. If the thread cannot be started, `f` runs
    /// right here instead: slower, never wrong.
    pub(crate) fn spawn<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            // A panic drops `tx` unsent, which `Pending::wait` reports; the thread
            // lives on for the next job.
            if let Ok(v) = panic::catch_unwind(AssertUnwindSafe(f)) {
                let _ = tx.send(v);
            }
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.is_none() {
            *jobs = start();
        }
        let job = match jobs.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Pending { rx },
                Err(mpsc::SendError(job)) => {
                    // The thread is gone: start another next time.
                    *jobs = None;
                    job
                }
            },
            None => job,
        };
        drop(jobs);
        job();
        Pending { rx }
    }
}

fn start() -> Option<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new().name("sqlite-helper".into()).spawn(move || {
        for job in rx {
            job();
        }
    });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the store's helper thread; large writes use one core");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_and_survives_a_panicking_one() {
        let h = Helper::default();
        assert_eq!(h.spawn(|| 6 * 7).wait(), Some(42));
        assert_eq!(h.spawn(|| -> u8 { panic!("a job fails") }).wait(), None);
        let after = h.spawn(|| std::thread::current().name().map(str::to_owned));
        assert_eq!(after.wait(), Some(Some("sqlite-helper".to_owned())));
    }
}
