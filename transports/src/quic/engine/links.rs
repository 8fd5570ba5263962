//! Links: making a confirmed connection a peer's current one, and watching
//! it until it closes.
//!
//! A peer has at most one current connection. The duplicate rule, applied
//! under the peer's state lock: a connection from a new incarnation replaces
//! the old one (PeerDown "restarted", then PeerUp); an old connection that
//! is already closed is simply replaced; between two live connections of the
//! same incarnation the one dialed by the lower-named node is kept (a re-dial
//! by the same dialer replaces its old connection) and the loser is closed
//! with `CLOSE_DUPLICATE`. PeerUp and PeerDown for one peer are sent
//! under that lock, so they are ordered. Once a connection stops being
//! current it never becomes current again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use quinn::Connection;
use tracing::{debug, info, warn};
use troupe_framework::transport::TransportEvent;

use super::super::wire;
use super::{close, Current, Inner, Link, Peer};

/// Why `register` did not install a connection.
pub(super) enum Registration {
    /// The duplicate rule keeps the existing connection.
    Duplicate,
    /// The transport is shutting down.
    ShuttingDown,
}

impl Inner {
    /// Makes `conn` the current connection of `peer`, unless the duplicate rule
    /// keeps the existing one. Emits PeerUp / PeerDown as needed.
    pub(super) async fn register(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        conn: Connection,
        dialed_by_me: bool,
        incarnation: String,
    ) -> Result<(), Registration> {
        let mut st = peer.state.lock().await;
        if self.is_shut_down() {
            close(&conn, wire::CLOSE_SHUTDOWN, "shutdown");
            return Err(Registration::ShuttingDown);
        }
        if let Some(old) = st.current.take() {
            if old.link.conn.close_reason().is_some() {
                // Dead already; its monitor will find it is no longer current.
            } else if old.incarnation != incarnation {
                if st.replaced.as_ref() == Some(&incarnation) {
                    if st.impostor_comebacks % 30 == 0 {
                        warn!(
                            node = %self.name, peer = %peer.name,
                            "two running processes claim to be {:?} (incarnation {} at {}, \
                             incarnation {} at {}) and keep replacing each other's connection: \
                             stop one of them; each node name must run once",
                            peer.name, old.incarnation, old.link.conn.remote_address(),
                            incarnation, conn.remote_address()
                        );
                    }
                    st.impostor_comebacks = st.impostor_comebacks.wrapping_add(1);
                }
                st.replaced = Some(old.incarnation.clone());
                close(&old.link.conn, wire::CLOSE_REPLACED, "peer restarted");
                if st.up {
                    st.up = false;
                    peer.current_id.store(0, Ordering::Release);
                    peer.link.send_replace(None);
                    let _ = self
                        .inbound
                        .send(TransportEvent::PeerDown {
                            peer: peer.name.clone(),
                            reason: format!(
                                "restarted: incarnation {} replaced {}",
                                incarnation, old.incarnation
                            ),
                        })
                        .await;
                }
            } else {
                let dialer = |by_me: bool| if by_me { &self.name } else { &peer.name };
                let (old_dialer, new_dialer) = (dialer(old.dialed_by_me), dialer(dialed_by_me));
                // Same dialer twice: it re-dialed because it saw the old one die.
                let new_wins = old_dialer == new_dialer || new_dialer < old_dialer;
                if !new_wins {
                    debug!(node = %self.name, peer = %peer.name, "duplicate connection: keeping the one dialed by {old_dialer}");
                    st.current = Some(old);
                    close(&conn, wire::CLOSE_DUPLICATE, "duplicate connection");
                    return Err(Registration::Duplicate);
                }
                debug!(node = %self.name, peer = %peer.name, "duplicate connection: keeping the one dialed by {new_dialer}");
                close(
                    &old.link.conn,
                    wire::CLOSE_DUPLICATE,
                    "duplicate connection",
                );
            }
        }
        let id = self.next_link_id.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            id,
            conn: conn.clone(),
        };
        if !st.up {
            info!(node = %self.name, peer = %peer.name, remote = %conn.remote_address(), %incarnation, "peer up");
            if self
                .inbound
                .send(TransportEvent::PeerUp {
                    peer: peer.name.clone(),
                })
                .await
                .is_err()
            {
                debug!(node = %self.name, "node's inbound channel is closed");
            }
            st.up = true;
        }
        peer.current_id.store(id, Ordering::Release);
        peer.link.send_replace(Some(link.clone()));
        st.current = Some(Current {
            link: link.clone(),
            dialed_by_me,
            incarnation,
        });
        drop(st);
        tokio::spawn(self.clone().monitor(peer.clone(), link.clone()));
        tokio::spawn(self.clone().accept_streams(peer.clone(), link));
        Ok(())
    }

    /// Waits for the link to close; if it was current, clears it and emits PeerDown.
    async fn monitor(self: Arc<Self>, peer: Arc<Peer>, link: Link) {
        let reason = link.conn.closed().await;
        let mut st = peer.state.lock().await;
        if st.current.as_ref().map(|c| c.link.id) != Some(link.id) {
            return;
        }
        st.current = None;
        peer.current_id.store(0, Ordering::Release);
        peer.link.send_replace(None);
        if st.up && !self.is_shut_down() {
            st.up = false;
            info!(node = %self.name, peer = %peer.name, "peer down: {reason}");
            let _ = self
                .inbound
                .send(TransportEvent::PeerDown {
                    peer: peer.name.clone(),
                    reason: reason.to_string(),
                })
                .await;
        }
    }
}
