//! Acknowledgements of one channel's deliveries in as few frames as their order allows.
//!
//! Messages of a concurrent consumer finish out of order. An ack with `multiple` settles every
//! outstanding delivery up to its tag, so it may only be sent up to just below the oldest
//! delivery still in process. A message that finishes ahead of an older one waits for it,
//! unless [`MAX_DEFERRED`] are waiting already: then they are acked one by one, so that one
//! slow message never holds the others' acks (and the prefetch window) for long.

use std::collections::{BTreeMap, BTreeSet};

/// Finished messages whose ack may wait for an older one still in process.
pub const MAX_DEFERRED: usize = 64;

/// One acknowledgement frame to send: the delivery whose handle sends it, and whether it
/// settles every outstanding delivery up to it.
#[derive(Debug, PartialEq, Eq)]
pub struct Ack<H> {
    /// The handle of the delivery with the frame's tag.
    pub handle: H,
    /// Whether the frame settles every outstanding delivery up to its tag.
    pub multiple: bool,
}

/// The deliveries of one channel between their arrival and their ack. `H` is the handle that
/// sends an ack (lapin's `Acker`).
#[derive(Debug)]
pub struct AckWindow<H> {
    in_process: BTreeSet<u64>,
    finished: BTreeMap<u64, H>,
}

impl<H> Default for AckWindow<H> {
    fn default() -> Self {
        Self {
            in_process: BTreeSet::new(),
            finished: BTreeMap::new(),
        }
    }
}

impl<H> AckWindow<H> {
    /// Delivery `tag` is taken into process.
    pub fn taken(&mut self, tag: u64) {
        self.in_process.insert(tag);
    }

    /// Delivery `tag` finished and is to be acked: the frames to send now.
    pub fn finished(&mut self, tag: u64, handle: H) -> Vec<Ack<H>> {
        self.in_process.remove(&tag);
        self.finished.insert(tag, handle);
        self.due()
    }

    /// Delivery `tag` was settled otherwise (requeued with a nack of its own): it no longer
    /// holds back the acks of newer ones. The frames to send now.
    pub fn settled_otherwise(&mut self, tag: u64) -> Vec<Ack<H>> {
        self.in_process.remove(&tag);
        self.due()
    }

    /// Every finished message, acked one by one or together, whatever is still in process
    /// (when the consumer stops).
    pub fn flush(&mut self) -> Vec<Ack<H>> {
        std::mem::take(&mut self.finished)
            .into_values()
            .map(|handle| Ack {
                handle,
                multiple: false,
            })
            .collect()
    }

    /// Deliveries taken and not finished.
    pub fn in_process(&self) -> usize {
        self.in_process.len()
    }

    fn due(&mut self) -> Vec<Ack<H>> {
        let mut out = Vec::new();
        // Everything finished below the oldest delivery in process goes in one frame.
        let floor = self.in_process.first().copied().unwrap_or(u64::MAX);
        let ready = match floor {
            u64::MAX => std::mem::take(&mut self.finished),
            floor => {
                let waiting = self.finished.split_off(&floor);
                std::mem::replace(&mut self.finished, waiting)
            }
        };
        if let Some((_, handle)) = ready.into_iter().next_back() {
            out.push(Ack {
                handle,
                multiple: true,
            });
        }
        if self.finished.len() > MAX_DEFERRED {
            out.extend(self.flush());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(acks: Vec<Ack<u64>>) -> Vec<(u64, bool)> {
        acks.into_iter().map(|a| (a.handle, a.multiple)).collect()
    }

    #[test]
    fn in_order_finishes_ack_at_once() {
        let mut w = AckWindow::default();
        w.taken(1);
        w.taken(2);
        assert_eq!(tags(w.finished(1, 1)), [(1, true)]);
        assert_eq!(tags(w.finished(2, 2)), [(2, true)]);
        assert_eq!(w.in_process(), 0);
    }

    #[test]
    fn a_newer_finish_waits_for_the_older_then_both_go_in_one_frame() {
        let mut w = AckWindow::default();
        for t in 1..=3 {
            w.taken(t);
        }
        assert_eq!(tags(w.finished(2, 2)), []);
        assert_eq!(tags(w.finished(3, 3)), []);
        assert_eq!(tags(w.finished(1, 1)), [(3, true)]);
    }

    #[test]
    fn a_frame_never_covers_a_delivery_still_in_process() {
        let mut w = AckWindow::default();
        for t in 1..=4 {
            w.taken(t);
        }
        assert_eq!(tags(w.finished(1, 1)), [(1, true)]);
        assert_eq!(tags(w.finished(4, 4)), []);
        assert_eq!(tags(w.finished(2, 2)), [(2, true)], "3 is still in process");
        assert_eq!(tags(w.finished(3, 3)), [(4, true)]);
    }

    #[test]
    fn a_requeued_delivery_stops_holding_the_others() {
        let mut w = AckWindow::default();
        w.taken(1);
        w.taken(2);
        assert_eq!(tags(w.finished(2, 2)), []);
        assert_eq!(tags(w.settled_otherwise(1)), [(2, true)]);
    }

    #[test]
    fn one_slow_delivery_holds_only_so_many_acks() {
        let mut w = AckWindow::default();
        let last = MAX_DEFERRED as u64 + 2;
        for t in 1..=last {
            w.taken(t);
        }
        for t in 2..last {
            assert_eq!(tags(w.finished(t, t)), [], "{t} waits for 1");
        }
        let flushed = tags(w.finished(last, last));
        assert_eq!(flushed.len(), MAX_DEFERRED + 1);
        assert!(flushed.iter().all(|(_, multiple)| !multiple));
        assert_eq!(tags(w.finished(1, 1)), [(1, true)]);
    }

    #[test]
    fn stopping_flushes_what_finished() {
        let mut w = AckWindow::default();
        w.taken(1);
        w.taken(2);
        assert_eq!(tags(w.finished(2, 2)), []);
        assert_eq!(tags(w.flush()), [(2, false)]);
    }
}
