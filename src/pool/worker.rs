//! The pool's worker threads: each takes batches from the queue
//! ([`super::queue`]), runs them on a process slot, and answers them (the
//! rules of the module notes of [`super`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use super::{account, Completion, Queued, Shared, MAX_BATCH};
use crate::error::{Error, Result};
use crate::pg::page::Page;
use crate::pool::handoff::Ring;
use crate::pool::queue::Next;
use crate::pool::slots::Job;
use crate::pool::stats::bump;

pub(super) fn worker(shared: &Shared, lane: usize) {
    let (slots, stats) = (&shared.slots, &shared.stats);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let next = shared.queue.next(
            lane,
            &mut batch,
            MAX_BATCH,
            slots.retire_interval(),
            |tenants| slots.try_take_first(tenants),
        );
        let slot = match next {
            Next::Batch(slot) => slot,
            Next::Ready => {
                for mut item in batch.drain(..) {
                    let page = item.request.answer.take().expect("needs no process");
                    drop(complete(shared, item, Ok(page)));
                }
                continue;
            }
            Next::Expired => {
                for item in batch.drain(..) {
                    let waited = item.started.elapsed();
                    let err = slots.deadline_error(String::new());
                    drop(complete(shared, Queued { waited, ..item }, Err(err)));
                }
                continue;
            }
            Next::Idle => {
                slots.retire_idle();
                continue;
            }
            Next::Stop => {
                // Closing: nothing more can be queued; answer what is left.
                for item in shared.queue.drain() {
                    drop(complete(shared, item, Err(Error::Shutdown)));
                }
                return;
            }
        };
        let mut batch = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        for item in &mut batch {
            item.waited = item.started.elapsed();
        }

        // Requests answered from an image need no process, cancelled ones
        // nothing at all.
        let (ready, batch): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|q| q.request.answer.is_some() || q.completion.cancelled());
        for mut item in ready {
            let ring = match item.request.answer.take() {
                Some(page) => complete(shared, item, Ok(page)),
                None => {
                    bump(&stats.cancellations);
                    complete(shared, item, Err(Error::Cancelled))
                }
            };
            drop(ring);
        }
        let mut slot = slot;
        let mut jobs: Vec<Job> = batch
            .iter()
            .map(|q| Job {
                cancel: match &q.completion {
                    Completion::Call(c) => Some(&c.cancel),
                    _ => None,
                },
                ..Job::new(q.key, &q.request, q.deadline)
            })
            .collect();
        slot.execute(&mut jobs);
        // The slot goes back before any callback runs.
        drop(slot);
        let outcomes: Vec<Result<Box<Page>>> = jobs
            .into_iter()
            .map(|j| j.outcome.expect("every job gets an outcome"))
            .collect();
        let cancelled = outcomes
            .iter()
            .filter(|o| matches!(o, Err(Error::Cancelled)))
            .count();
        if cancelled > 0 {
            stats
                .cancellations
                .fetch_add(cancelled as u64, Ordering::Relaxed);
        }
        // Blocked callers first, woken all at once (see `handoff`); then
        // the callbacks, which may take their time.
        let mut rings = Vec::new();
        let mut callbacks = Vec::new();
        for (item, outcome) in batch.into_iter().zip(outcomes) {
            if matches!(item.completion, Completion::Callback(_)) {
                callbacks.push((item, outcome));
            } else {
                rings.extend(complete(shared, item, outcome));
            }
        }
        Ring::ring_all(rings);
        for (item, outcome) in callbacks {
            drop(complete(shared, item, outcome));
        }
        slots.retire_idle();
    }
}

/// Answer a queued request; a blocked caller's answer comes with the ring
/// that wakes it.
pub(super) fn complete(shared: &Shared, item: Queued, outcome: Result<Box<Page>>) -> Option<Ring> {
    account(
        shared,
        &item.key,
        item.started,
        item.waited,
        outcome.as_ref().map(|p| &**p),
    );
    match item.completion {
        Completion::Wait(reply) => Some(reply.send(outcome)),
        Completion::Callback(cb) => {
            let arg = outcome.as_ref().map(|p| &**p);
            if catch_unwind(AssertUnwindSafe(|| cb(arg))).is_err() {
                log::error!("a walredo callback panicked; the worker carries on");
            }
            None
        }
        Completion::Call(call) => {
            call.complete(outcome);
            None
        }
    }
}
