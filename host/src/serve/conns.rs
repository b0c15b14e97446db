//! The connections `braid serve` holds open, so that idle ones cannot
//! starve it: at most `max_total` at once and `max_per_peer` from one
//! address. A connection past either bound takes the place of the
//! longest-idle one (of its address, for the per-address bound), which is
//! closed; only when every connection in its way is busy answering a
//! request is the new one closed instead. So thousands of sockets opened and
//! left silent cost their opener its own oldest sockets, not service.
//!
//! "Idle" means no request in progress: before the first request's head is
//! complete, and between keep-alive requests (a request is in progress from
//! its head until its answer's body has been sent, see [`Busy`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The open connections and their bounds.
pub(super) struct Conns {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Conn>,
    per_peer: HashMap<IpAddr, usize>,
}

struct Conn {
    peer: IpAddr,
    /// Requests in progress (HTTP/1.1: one at a time).
    busy: usize,
    /// Since when it has had none.
    idle_since: Instant,
    /// Fired to close it (it was the longest idle when room was needed).
    close: CancellationToken,
}

impl State {
    /// Forgets connection `id`, and fires its `close` (`evict`).
    fn remove(&mut self, id: u64, evict: bool) {
        let Some(conn) = self.open.remove(&id) else {
            return;
        };
        if evict {
            conn.close.cancel();
        }
        if let Some(n) = self.per_peer.get_mut(&conn.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&conn.peer);
            }
        }
    }

    /// The longest-idle connection (of `peer`, if given).
    fn longest_idle(&self, peer: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, c)| c.busy == 0 && peer.is_none_or(|p| c.peer == p))
            .min_by_key(|(_, c)| c.idle_since)
            .map(|(id, _)| *id)
    }

    /// Makes room under `bound` (with `count` open now) by closing the
    /// longest-idle connection; false if every one is busy.
    fn make_room(&mut self, count: usize, bound: usize, peer: Option<IpAddr>) -> bool {
        if count < bound {
            return true;
        }
        match self.longest_idle(peer) {
            Some(id) => {
                self.remove(id, true);
                true
            }
            None => false,
        }
    }
}

impl Conns {
    pub(super) fn new(max_total: usize, max_per_peer: usize) -> Arc<Conns> {
        Arc::new(Conns {
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is made whole under the lock: a panic cannot leave
        // it half-done.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a connection from `peer`, closing the longest-idle one in
    /// its way if a bound is reached. `None`: every connection in its way
    /// is busy; the new one is to be closed.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Registered> {
        let mut state = self.lock();
        let from_peer = state.per_peer.get(&peer).copied().unwrap_or(0);
        if !state.make_room(from_peer, self.max_per_peer, Some(peer)) {
            return None;
        }
        let total = state.open.len();
        if !state.make_room(total, self.max_total, None) {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let close = CancellationToken::new();
        state.open.insert(
            id,
            Conn {
                peer,
                busy: 0,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        *state.per_peer.entry(peer).or_default() += 1;
        Some(Registered {
            conns: Arc::clone(self),
            id,
            close,
            requested: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().open.len()
    }
}

/// A registered connection; forgotten when dropped.
pub(super) struct Registered {
    conns: Arc<Conns>,
    id: u64,
    /// Fires when the connection is to be closed to make room.
    pub(super) close: CancellationToken,
    /// Set when its first request head is complete.
    requested: std::sync::atomic::AtomicBool,
}

impl Registered {
    /// Whether a request head has been complete on it (see [`Registered::busy`]).
    pub(super) fn has_had_a_request(&self) -> bool {
        self.requested.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub(super) fn busy(&self) -> Busy {
        self.requested
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(conn) = self.conns.lock().open.get_mut(&self.id) {
            conn.busy += 1;
        }
        Busy {
            conns: Arc::clone(&self.conns),
            id: self.id,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id, false);
    }
}

/// A request in progress on a connection (held until its answer's body is
/// sent or dropped).
pub(super) struct Busy {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(conn) = self.conns.lock().open.get_mut(&self.id) {
            conn.busy = conn.busy.saturating_sub(1);
            if conn.busy == 0 {
                conn.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn past_the_bound_the_longest_idle_connection_makes_room() {
        let conns = Conns::new(3, 10);
        let first = conns.admit(A).expect("room");
        let second = conns.admit(A).expect("room");
        let third = conns.admit(B).expect("room");
        let _busy = second.busy();
        // Full: the longest idle (the first; the second is busy) is closed.
        let fourth = conns.admit(B).expect("room made");
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled() && !third.close.is_cancelled());
        assert_eq!(conns.len(), 3);
        // When every one in the way is busy, the newcomer is refused.
        let (_b3, _b4) = (third.busy(), fourth.busy());
        assert!(conns.admit(A).is_none());
        drop(first);
        assert_eq!(conns.len(), 3, "the closed one was already forgotten");
    }

    #[test]
    fn one_address_past_its_bound_closes_its_own_idle_connections() {
        let conns = Conns::new(100, 2);
        let a1 = conns.admit(A).expect("room");
        let b1 = conns.admit(B).expect("room");
        let a2 = conns.admit(A).expect("room");
        let a3 = conns.admit(A).expect("room: a1 goes");
        assert!(a1.close.is_cancelled(), "A's longest idle");
        assert!(!b1.close.is_cancelled(), "B is not A's to close");
        assert!(!a2.close.is_cancelled() && !a3.close.is_cancelled());
        // An answer sent makes a connection idle from then on.
        let busy = a2.busy();
        std::thread::sleep(std::time::Duration::from_millis(2));
        drop(busy);
        let a4 = conns.admit(A).expect("room: a3 goes (a2 idle since later)");
        assert!(a3.close.is_cancelled() && !a2.close.is_cancelled());
        drop((a2, a4, b1));
        assert_eq!(conns.len(), 0);
    }
}
