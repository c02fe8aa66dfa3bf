//! The thread that starts a pool's processes ([`Spawner`]), so that their
//! `PR_SET_PDEATHSIG` is tied to a thread that lives as long as the pool,
//! and the spare process it keeps ready.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::error::{Error, Result};
use crate::process::launch::Launcher;
use crate::process::{threads, Process};

/// A thread that starts processes on behalf of others, so that their
/// `PR_SET_PDEATHSIG` is tied to this thread, which lives as long as its
/// owner: that signal fires when the *thread* that started a child (or the
/// template) exits, not the process, and a caller's thread may exit any time.
///
/// It also keeps one spare (`Config::spare_process`): a fresh process,
/// started ahead and never used by anyone, handed over at once to the next
/// job, after which the next spare is started once no job has come for
/// `SPARE_SETTLE`. A spare is
/// checked before it is handed over: alive, and it answers a ping within
/// `SPARE_PING` (a dead, stopped or hung one is dropped and a fresh process
/// started instead, which is no failed start); the first is started
/// only after the first start that succeeded (a pool that never served
/// starts nothing), and it is dropped (killed, reaped, its directory removed)
/// when `idle_timeout` passes without a job, and with the spawner. The
/// spare's start-up runs while it waits, so the handshake that follows the
/// hand-over finds it ready.
pub struct Spawner {
    launcher: Arc<Launcher>,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The spare's pid, 0 when there is none (for tests).
    spare_pid: Arc<AtomicU32>,
}

impl Spawner {
    pub fn new(launcher: Arc<Launcher>) -> Result<Spawner> {
        let (jobs, rx) = bounded::<Job>(0);
        let ours = launcher.clone();
        let spare_pid = Arc::new(AtomicU32::new(0));
        let shown_pid = Arc::clone(&spare_pid);
        let thread = threads::spawn_blocking_signals("walredo-spawner".into(), move || {
            let mut spare: Option<Process> = None;
            // A spare is due (after a start that succeeded), to be started
            // once no job came for `SPARE_SETTLE`.
            let mut spare_due = false;
            // After `close`: no spare any more.
            let mut closed = false;
            loop {
                let job = match (&spare, launcher.idle_timeout()) {
                    _ if spare_due => rx.recv_timeout(SPARE_SETTLE),
                    (Some(_), Some(idle)) => rx.recv_timeout(idle),
                    _ => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                let reply = match job {
                    Ok(Job::Start(reply)) => reply,
                    Ok(Job::Sync) => continue,
                    Ok(Job::Close) => {
                        closed = true;
                        spare_due = false;
                        shown_pid.store(0, Ordering::Relaxed);
                        spare = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) if spare_due => {
                        spare_due = false;
                        // A failed start of the spare is not reported: the
                        // next job starts its own process and gets that error.
                        spare = Process::spawn(&launcher).ok();
                        if let Some(p) = &spare {
                            shown_pid.store(p.pid(), Ordering::Relaxed);
                        }
                        launcher.prepare_scratch_dir();
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: an idle pool keeps no process alive for this.
                        shown_pid.store(0, Ordering::Relaxed);
                        spare = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                shown_pid.store(0, Ordering::Relaxed);
                // A spare that is dead or does not answer is dropped here
                // (killed, reaped, its directory removed) and a fresh
                // process started: nobody is charged.
                let ready = spare
                    .take()
                    .and_then(|mut p| ready_to_hand_over(&mut p).then_some(p));
                let process = match ready {
                    Some(p) => Ok(p),
                    None => Process::spawn(&launcher),
                };
                spare_due = process.is_ok() && launcher.spare_process() && !closed;
                // The requester may have given up; then the process is
                // dropped here, which kills and reaps it.
                let _ = reply.send(process);
                // The next start's directory, while nobody waits.
                launcher.prepare_scratch_dir();
            }
            shown_pid.store(0, Ordering::Relaxed);
            // `spare` is dropped here, on this thread: killed and reaped.
        })
        .map_err(|e| Error::SpawnFailed(format!("cannot start the spawner thread: {e}")))?;
        Ok(Spawner {
            launcher: ours,
            jobs: Some(jobs),
            thread: Some(thread),
            spare_pid,
        })
    }

    /// Give up what the launcher made ahead of need (see
    /// `Launcher::release`); for a pool that has shut down.
    pub fn release(&self) {
        self.close();
        self.launcher.release();
    }

    /// Start a process on the spawner thread and hand it over.
    pub fn spawn(&self) -> Result<Process> {
        let (reply, answer) = bounded(1);
        let gone = || Error::Internal("the spawner thread is gone".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Job::Start(reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    /// Kill and reap the spare, if any, and start no more (for a pool that
    /// shuts down: nothing of it may outlive its shutdown). Starts asked for
    /// afterwards are still served. Returns once the spare is gone.
    pub fn close(&self) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Close);
            // The thread takes one job at a time: once it takes the next,
            // the spare is gone.
            let _ = jobs.send(Job::Sync);
        }
    }

    /// The pid of the spare process waiting now, if any (for tests).
    pub fn spare_pid(&self) -> Option<u32> {
        Some(self.spare_pid.load(Ordering::Relaxed)).filter(|&p| p != 0)
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the spawner thread is asked to do.
enum Job {
    /// Hand over a process (the spare, or a new one) on this channel.
    Start(Sender<Result<Process>>),
    /// Drop the spare and keep none from now on.
    Close,
    /// Nothing: taken only once the jobs before it are done.
    Sync,
}

/// How long a spare may take to answer the ping at its hand-over. One that
/// waited is ready and answers in microseconds; one started moments ago
/// answers once its start-up is done (a few milliseconds, more on a loaded
/// machine). One that was stopped (SIGSTOP) or hangs never does: it would
/// pass a liveness check, and then fail its slot's handshake by the pool's
/// deadline.
const SPARE_PING: Duration = Duration::from_millis(100);

/// Whether a spare can be handed over: alive, and it answers a ping within
/// `SPARE_PING`. One that cannot is killed and reaped (by the handshake).
fn ready_to_hand_over(spare: &mut Process) -> bool {
    if !spare.is_alive() {
        return false;
    }
    match spare.handshake(SPARE_PING) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "the spare process {} is not handed over ({e}); starting another",
                spare.pid()
            );
            false
        }
    }
}

/// How long the spawner waits after a hand-over before it starts the next
/// spare: the process just handed over is doing its handshake and first
/// request then, and on a small machine the spare's start-up (a fork in the
/// template, then about a millisecond of PostgreSQL's start-up) would take
/// the CPU from it. A job that comes meanwhile gets a fresh process.
const SPARE_SETTLE: Duration = Duration::from_millis(5);
