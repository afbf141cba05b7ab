//! A channel bounded both in messages and in the bytes they carry: how the coordinator holds
//! one job's events for a consumer that reads them slower than they come (from the node's link,
//! or from another replica). A sender never waits: a message that does not fit is refused, and
//! the receiver can tell that it fell behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;
pub(crate) use tokio::sync::mpsc::error::TrySendError;

/// A channel for at most `messages` messages and `bytes` bytes waiting (a message larger than
/// `bytes` is taken when nothing else waits, so that one large message always gets through).
pub(crate) fn channel<T>(messages: usize, bytes: usize) -> (Sender<T>, Receiver<T>) {
    let (sender, receiver) = mpsc::channel(messages);
    let waiting = Arc::new(Waiting {
        limit: bytes,
        bytes: AtomicUsize::new(0),
        fell_behind: AtomicBool::new(false),
    });
    (
        Sender {
            messages: sender,
            waiting: waiting.clone(),
        },
        Receiver {
            messages: receiver,
            waiting,
        },
    )
}

/// What waits in one channel: its bytes, and whether a message was refused for want of room.
#[derive(Debug)]
struct Waiting {
    limit: usize,
    bytes: AtomicUsize,
    fell_behind: AtomicBool,
}

/// The sending end of a [`channel`].
#[derive(Debug)]
pub(crate) struct Sender<T> {
    messages: mpsc::Sender<(T, usize)>,
    waiting: Arc<Waiting>,
}

impl<T> Sender<T> {
    /// Sends `message`, which carries `size` bytes, without waiting: `Full` when it does not fit
    /// (the receiver then [fell behind](Receiver::fell_behind)), `Closed` when the receiver is
    /// gone.
    pub(crate) fn try_send(&self, message: T, size: usize) -> Result<(), TrySendError<T>> {
        // Counted before it is sent, so that the receiver never takes off what was not added.
        let before = self.waiting.bytes.fetch_add(size, Ordering::Relaxed);
        let sent = if before > 0 && before.saturating_add(size) > self.waiting.limit {
            Err(TrySendError::Full((message, size)))
        } else {
            self.messages.try_send((message, size))
        };
        sent.map_err(|error| {
            self.waiting.bytes.fetch_sub(size, Ordering::Relaxed);
            match error {
                TrySendError::Full((message, _)) => {
                    self.waiting.fell_behind.store(true, Ordering::Relaxed);
                    TrySendError::Full(message)
                }
                TrySendError::Closed((message, _)) => TrySendError::Closed(message),
            }
        })
    }
}

/// The receiving end of a [`channel`].
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    messages: mpsc::Receiver<(T, usize)>,
    waiting: Arc<Waiting>,
}

impl<T> Receiver<T> {
    /// The next message; `None` once the sender is gone and every message is read.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        let (message, size) = self.messages.recv().await?;
        self.waiting.bytes.fetch_sub(size, Ordering::Relaxed);
        Some(message)
    }

    /// Whether a message was refused because too many messages or bytes waited.
    pub(crate) fn fell_behind(&self) -> bool {
        self.waiting.fell_behind.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_wait_up_to_the_count_and_the_bytes() {
        let (sender, mut receiver) = channel::<u32>(3, 100);
        sender.try_send(1, 60).unwrap();
        // 60 + 50 bytes would be over 100: refused, and the receiver fell behind.
        assert!(matches!(sender.try_send(2, 50), Err(TrySendError::Full(2))));
        assert!(receiver.fell_behind());
        sender.try_send(3, 40).unwrap();
        assert_eq!(receiver.recv().await, Some(1));
        // Reading gives the bytes back.
        sender.try_send(4, 60).unwrap();
        assert_eq!(receiver.recv().await, Some(3));
        assert_eq!(receiver.recv().await, Some(4));
        // Three small messages fill the count.
        for n in 5..8 {
            sender.try_send(n, 1).unwrap();
        }
        assert!(matches!(sender.try_send(8, 1), Err(TrySendError::Full(8))));
        drop(sender);
        for n in 5..8 {
            assert_eq!(receiver.recv().await, Some(n));
        }
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn one_message_larger_than_the_bound_passes_when_nothing_waits() {
        let (sender, mut receiver) = channel::<&str>(8, 10);
        sender.try_send("large", 1_000).unwrap();
        assert!(matches!(
            sender.try_send("small", 1),
            Err(TrySendError::Full("small"))
        ));
        assert_eq!(receiver.recv().await, Some("large"));
        sender.try_send("small", 1).unwrap();
        assert!(receiver.fell_behind());
        drop(receiver);
        assert!(matches!(
            sender.try_send("late", 1),
            Err(TrySendError::Closed("late"))
        ));
    }
}
