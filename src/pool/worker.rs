//! The pool's worker threads: each takes batches from the queue
//! ([`super::lanes`]), runs them on a process slot, and answers them (the
//! rules of the module notes of [`super`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::{account, Completion, Queued, Shared, MAX_BATCH};
use crate::error::{Error, Result};
use crate::pg::page::Page;
use crate::pool::handoff::Ring;
use crate::pool::lanes::Next;
use crate::pool::slots::{Job, SlotGuard, Slots};
use crate::pool::stats::{bump, Stats};

pub(super) fn worker(shared: &Shared, lane: usize, stop: &Receiver<()>) {
    let (slots, stats) = (&shared.slots, &shared.stats);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        match shared
            .queue
            .next(lane, &mut batch, MAX_BATCH, stop, slots.retire_interval())
        {
            Next::Batch => {}
            Next::Idle => {
                slots.retire_idle();
                continue;
            }
            Next::Stop => {
                // Closing: nothing more can be queued; answer what is left.
                for item in shared.queue.drain(lane) {
                    drop(complete(stats, item, Err(Error::Shutdown)));
                }
                return;
            }
        }
        let batch = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));

        // Requests answered from an image need no process, cancelled ones
        // nothing at all.
        let (ready, mut batch): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|q| q.request.answer.is_some() || q.completion.cancelled());
        for mut item in ready {
            let ring = match item.request.answer.take() {
                Some(page) => complete(stats, item, Ok(page)),
                None => {
                    bump(&stats.cancellations);
                    complete(stats, item, Err(Error::Cancelled))
                }
            };
            drop(ring);
        }
        let Some(slot) = take_in_time(slots, stats, &mut batch) else {
            continue;
        };
        let outcomes: Vec<Result<Box<Page>>> = match slot {
            Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
            Ok(mut slot) => {
                let mut jobs: Vec<Job> = batch
                    .iter()
                    .map(|q| Job {
                        cancel: match &q.completion {
                            Completion::Call(c) => Some(&c.cancel),
                            _ => None,
                        },
                        ..Job::new(&q.request, slots.deadline_from(q.started))
                    })
                    .collect();
                slot.execute(&mut jobs);
                // The slot goes back before any callback runs.
                drop(slot);
                jobs.into_iter()
                    .map(|j| j.outcome.expect("every job gets an outcome"))
                    .collect()
            }
        };
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
                rings.extend(complete(stats, item, outcome));
            }
        }
        Ring::ring_all(rings);
        for (item, outcome) in callbacks {
            drop(complete(stats, item, outcome));
        }
        slots.retire_idle();
    }
}

/// A slot for `batch`; while waiting for one, the requests whose deadline
/// passes are answered with their timeout (and leave the batch). `None`
/// when none is left.
fn take_in_time<'a>(
    slots: &'a Slots,
    stats: &Stats,
    batch: &mut Vec<Queued>,
) -> Option<Result<SlotGuard<'a>>> {
    loop {
        let earliest = batch.iter().map(|q| slots.deadline_from(q.started)).min()?;
        match slots.take_until(earliest) {
            Ok(Some(slot)) => return Some(Ok(slot)),
            Err(e) => return Some(Err(e)),
            Ok(None) => {
                let now = Instant::now();
                let (late, rest): (Vec<Queued>, Vec<Queued>) = std::mem::take(batch)
                    .into_iter()
                    .partition(|q| slots.deadline_from(q.started) <= now);
                *batch = rest;
                for item in late {
                    drop(complete(
                        stats,
                        item,
                        Err(slots.deadline_error(String::new())),
                    ));
                }
            }
        }
    }
}

/// Answer a queued request; a blocked caller's answer comes with the ring
/// that wakes it.
pub(super) fn complete(stats: &Stats, item: Queued, outcome: Result<Box<Page>>) -> Option<Ring> {
    account(stats, item.started, outcome.as_ref().map(|p| &**p));
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
