//! Writes on their way to an authority: hub request id → the session asked and where its
//! answer goes. Only that session may answer; when it goes away, its writes are answered at once.

use dashmap::DashMap;
use pointhub_schemas::WriteResult;
use tokio::sync::oneshot;

/// A write sent to an authority, waiting for its answer.
struct Pending {
    /// The session the request went to: a result from any other session is refused.
    session: u64,
    reply: oneshot::Sender<WriteResult>,
}

/// What became of a write result an authority sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// It answered a request sent to that session: the writer has it.
    Delivered,
    /// The request went to another session: refused.
    Foreign,
    /// No such request waits (answered after its timeout, or never asked).
    Unknown,
}

/// The writes waiting for their authority's answer.
#[derive(Default)]
pub(crate) struct PendingWrites {
    map: DashMap<u64, Pending>,
}

impl PendingWrites {
    /// Request `req` goes to session `session`: its answer arrives on the returned receiver,
    /// which fails when the session goes away first ([`PendingWrites::session_gone`]).
    pub(crate) fn open(&self, req: u64, session: u64) -> oneshot::Receiver<WriteResult> {
        let (reply, rx) = oneshot::channel();
        self.map.insert(req, Pending { session, reply });
        rx
    }

    /// Request `req` is no longer waited for (sent nowhere, or timed out).
    pub(crate) fn cancel(&self, req: u64) {
        self.map.remove(&req);
    }

    /// Session `session` answered request `r.req`.
    pub(crate) fn answer(&self, session: u64, r: WriteResult) -> Answer {
        match self.map.remove_if(&r.req, |_, w| w.session == session) {
            Some((_, w)) => {
                let _ = w.reply.send(r);
                Answer::Delivered
            }
            None if self.map.contains_key(&r.req) => Answer::Foreign,
            None => Answer::Unknown,
        }
    }

    /// Session `session` went away: every write waiting on it is answered now (its writer sees
    /// the reply channel close and answers `BadNoCommunication`), not at its timeout.
    pub(crate) fn session_gone(&self, session: u64) {
        self.map.retain(|_, w| w.session != session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_schemas::Quality;

    fn result(req: u64) -> WriteResult {
        WriteResult {
            req,
            status: Quality::Good,
            message: String::new(),
        }
    }

    #[test]
    fn only_the_session_asked_answers_and_a_gone_session_fails_its_writes() {
        let w = PendingWrites::default();
        let mut a = w.open(1, 10);
        let b = w.open(2, 20);
        assert_eq!(w.answer(20, result(1)), Answer::Foreign);
        assert!(a.try_recv().is_err(), "a foreign answer reached the writer");
        assert_eq!(w.answer(10, result(1)), Answer::Delivered);
        assert_eq!(a.try_recv().map(|r| r.req).ok(), Some(1));
        assert_eq!(w.answer(10, result(1)), Answer::Unknown);
        w.session_gone(20);
        let mut b = b;
        assert!(matches!(
            b.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
