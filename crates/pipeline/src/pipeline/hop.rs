//! A hop between two stage threads: an rtrb single-producer single-consumer ring plus a
//! park/unpark wake-up, so an idle stage sleeps instead of spinning (two cores are shared by
//! five stages) and a push wakes it at once. Neither side allocates or takes a lock.

use std::thread::Thread;
use std::time::Duration;

use parking_lot::Mutex;
use std::sync::Arc;

/// The sending end of a hop.
pub struct HopTx<T> {
    ring: rtrb::Producer<T>,
    consumer: Arc<Mutex<Option<Thread>>>,
    cached: Option<Thread>,
}

/// The receiving end of a hop.
pub struct HopRx<T> {
    ring: rtrb::Consumer<T>,
    consumer: Arc<Mutex<Option<Thread>>>,
}

/// A hop holding at most `capacity` items.
pub fn hop<T>(capacity: usize) -> (HopTx<T>, HopRx<T>) {
    let (ring_tx, ring_rx) = rtrb::RingBuffer::new(capacity.max(1));
    let consumer = Arc::new(Mutex::new(None));
    (
        HopTx {
            ring: ring_tx,
            consumer: consumer.clone(),
            cached: None,
        },
        HopRx {
            ring: ring_rx,
            consumer,
        },
    )
}

/// Wakes a thread that parks on a [`HopRx`]; cloneable, for side channels (the retire
/// channel) that want to wake the same consumer.
#[derive(Clone)]
pub struct Waker(Arc<Mutex<Option<Thread>>>);

impl Waker {
    /// Wakes the consumer, if it has registered.
    pub fn wake(&self) {
        if let Some(t) = self.0.lock().as_ref() {
            t.unpark();
        }
    }
}

impl<T> HopTx<T> {
    /// Pushes, or gives the item back when the ring is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        match self.ring.push(item) {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(rtrb::PushError::Full(item)) => Err(item),
        }
    }

    fn wake(&mut self) {
        if self.cached.is_none() {
            // the lock is taken only until the consumer has registered (once per session)
            self.cached = self.consumer.lock().clone();
        }
        if let Some(t) = &self.cached {
            t.unpark();
        }
    }
}

impl<T> HopRx<T> {
    /// Registers the calling thread as the one to wake. Call once, from the consumer thread.
    pub fn register_current(&self) {
        *self.consumer.lock() = Some(std::thread::current());
    }

    /// A waker for side channels into the same consumer thread.
    pub fn waker(&self) -> Waker {
        Waker(self.consumer.clone())
    }

    /// Pops one item without waiting.
    pub fn try_pop(&mut self) -> Option<T> {
        self.ring.pop().ok()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.ring.slots()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Whether the producer is gone and the ring is drained.
    pub fn is_closed(&self) -> bool {
        self.ring.is_abandoned() && self.ring.is_empty()
    }

    /// Parks the thread until a push wakes it or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        if self.ring.is_empty() {
            std::thread::park_timeout(timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_cross_threads_in_order_and_a_full_hop_gives_the_item_back() {
        let (mut tx, mut rx) = hop::<u32>(2);
        assert_eq!(tx.push(1), Ok(()));
        assert_eq!(tx.push(2), Ok(()));
        assert_eq!(tx.push(3), Err(3));
        assert_eq!(rx.try_pop(), Some(1));
        let consumer = std::thread::spawn(move || {
            rx.register_current();
            let mut got = Vec::new();
            while got.len() < 100 {
                match rx.try_pop() {
                    Some(v) => got.push(v),
                    None => rx.wait(Duration::from_millis(50)),
                }
            }
            got
        });
        let mut next = 3;
        while next < 102 {
            if tx.push(next).is_ok() {
                next += 1;
            } else {
                std::thread::yield_now();
            }
        }
        let got = consumer.join().unwrap();
        assert_eq!(got[0], 2);
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
