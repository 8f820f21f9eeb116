//! Reading ahead on a thread of its own: an iterator's items, produced in chunks by a
//! background thread while the caller works on the chunk before. Intake uses it so that the
//! file is parsed, validated and hashed on one core while the rows before are stored (by the
//! SQLite connection's thread, or PostgreSQL) on the other.
//!
//! Guarantees: items come in the iterator's order, each once; at most `depth` chunks of
//! `chunk` items wait between the two threads, so memory stays bounded whatever the length of
//! the input; dropping the reader stops the thread after the chunk it is on; [`Prefetch::finish`]
//! hands the iterator back where the thread left it (at its end once every item was taken), so
//! what it learned on the way (the hash of the bytes it read) can be read. If no thread can be
//! started, the items are read on the caller's thread instead.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

pub struct Prefetch<I: Iterator> {
    mode: Mode<I>,
    current: std::vec::IntoIter<I::Item>,
}

enum Mode<I: Iterator> {
    Thread {
        rx: Option<Receiver<Vec<I::Item>>>,
        thread: Option<JoinHandle<I>>,
    },
    Inline(I),
}

impl<I> Prefetch<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    /// Starts reading `inner` ahead on a new thread, `chunk` items at a time, at most `depth`
    /// chunks ahead of the caller.
    pub fn new(inner: I, chunk: usize, depth: usize) -> Self {
        let (tx, rx) = sync_channel(depth);
        let chunk = chunk.max(1);
        // The closure owns `inner`; if the thread cannot start, it comes back through `slot`.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(inner)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("payrun-intake".into())
            .spawn(move || {
                let inner = theirs.lock().expect("intake slot").take().expect("taken once");
                produce(inner, tx, chunk)
            });
        let mode = match spawned {
            Ok(thread) => Mode::Thread {
                rx: Some(rx),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no thread to read the file ahead; reading it inline");
                Mode::Inline(slot.lock().expect("intake slot").take().expect("not taken"))
            }
        };
        Prefetch {
            mode,
            current: Vec::new().into_iter(),
        }
    }

    /// Stops reading ahead and returns the iterator, where it was left: at its end if every
    /// item was taken. A panic on the thread is passed on here.
    pub fn finish(mut self) -> I {
        let mode = std::mem::replace(
            &mut self.mode,
            Mode::Thread {
                rx: None,
                thread: None,
            },
        );
        match mode {
            Mode::Inline(inner) => inner,
            Mode::Thread { rx, thread } => {
                drop(rx);
                match thread.expect("finished once").join() {
                    Ok(inner) => inner,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

fn produce<I: Iterator>(mut inner: I, tx: SyncSender<Vec<I::Item>>, chunk: usize) -> I {
    loop {
        let items: Vec<I::Item> = inner.by_ref().take(chunk).collect();
        let last = items.len() < chunk;
        // A failed send: the reader was dropped, nobody wants the rest.
        if items.is_empty() || tx.send(items).is_err() || last {
            return inner;
        }
    }
}

impl<I: Iterator> Iterator for Prefetch<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            match &mut self.mode {
                Mode::Inline(inner) => return inner.next(),
                // Disconnected: the thread has ended (at the end of the items, or by a
                // panic, which `finish` passes on).
                Mode::Thread { rx, .. } => {
                    self.current = rx.as_ref()?.recv().ok()?.into_iter();
                }
            }
        }
    }
}

impl<I: Iterator> Drop for Prefetch<I> {
    fn drop(&mut self) {
        if let Mode::Thread { rx, thread } = &mut self.mode {
            // Closing the channel first makes the thread's next send fail, so it stops.
            *rx = None;
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_comes_once_in_order_and_the_iterator_comes_back_at_its_end() {
        for (n, chunk) in [(0, 4), (3, 4), (8, 4), (9, 4), (1000, 7)] {
            let mut p = Prefetch::new(0..n, chunk, 2);
            let got: Vec<u32> = p.by_ref().collect();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{n} items, chunks of {chunk}");
            assert_eq!(p.next(), None);
            let mut rest = p.finish();
            assert_eq!(rest.next(), None);
        }
    }

    #[test]
    fn dropping_the_reader_early_stops_the_thread() {
        let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = produced.clone();
        let endless = std::iter::repeat_with(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        let mut p = Prefetch::new(endless, 10, 2);
        assert_eq!(p.next(), Some(0));
        drop(p);
        // At most the chunk taken, the two queued and the one being made.
        assert!(produced.load(std::sync::atomic::Ordering::Relaxed) <= 40);
    }

    #[test]
    fn a_panic_on_the_thread_ends_the_items_and_is_passed_on_by_finish() {
        let boom = (0..5).map(|i| if i == 3 { panic!("bad row source") } else { i });
        let mut p = Prefetch::new(boom, 2, 1);
        let got: Vec<i32> = p.by_ref().collect();
        assert_eq!(got, [0, 1]);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.finish()));
        assert!(caught.is_err());
    }
}
