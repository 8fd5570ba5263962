//! Inbound: the accept loop and the accepting side of the hello exchange.
//!
//! Each incoming connection gets its own task with the handshake timeout.
//! Only configured peers are accepted, and only when the certificate names
//! the node the hello claims (unless in insecure dev mode); every refusal is
//! logged and closes only that connection. Simultaneous dials are settled
//! here (the connection dialed by the lower name wins) before anything is
//! written on either connection; the duplicate rule of [`Inner::register`]
//! settles the rest, before this side answers the hello, so a losing dialer
//! hears why.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, warn};

use super::super::wire;
use super::links::Registration;
use super::reader::read_hello;
use super::{close, Inner};

/// `addr` with an IPv4-mapped IPv6 address (as seen by a dual-stack socket)
/// written as IPv4, so that addresses compare equal across the two forms.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Inner {
    pub(super) async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.is_shut_down() {
                incoming.refuse();
                continue;
            }
            tokio::spawn(self.clone().accept_one(incoming));
        }
    }

    async fn accept_one(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let deadline = self.cfg.handshake_timeout;
        let outcome = tokio::time::timeout(deadline, self.clone().accept_handshake(incoming)).await;
        if outcome.as_ref().is_ok_and(Result::is_ok) {
            return;
        }
        if self.is_shut_down() {
            // The shutdown broke it off: nothing for an operator to fix.
            debug!(node = %self.name, %remote, "shutting down: incoming connection dropped");
            return;
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(node = %self.name, %remote, "refused incoming connection: {e}"),
            Err(_) => warn!(
                node = %self.name, %remote,
                "refused incoming connection: handshake and hello took longer than {deadline:?}"
            ),
        }
    }

    async fn accept_handshake(self: Arc<Self>, incoming: quinn::Incoming) -> Result<(), String> {
        let conn = incoming
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let (mut send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| format!("no hello stream: {e}"))?;
        let theirs = match read_hello(&mut recv).await {
            Ok(h) => h,
            Err(e) => {
                close(&conn, wire::CLOSE_REFUSED, "bad hello");
                return Err(format!("bad hello: {e}"));
            }
        };
        let refuse = |why: String| {
            close(&conn, wire::CLOSE_REFUSED, &why);
            Err(why)
        };
        if theirs.name == self.name {
            return refuse(format!("peer claims to be this node ({:?})", theirs.name));
        }
        let Some(peer) = self.peers.get(&theirs.name).cloned() else {
            return refuse(format!(
                "node {:?} is not a configured peer (only configured peers are accepted)",
                theirs.name
            ));
        };
        if let Some(checker) = &self.checker {
            if let Err(e) = checker.check(&conn, &theirs.name) {
                return refuse(format!("peer claiming {:?}: {e}", theirs.name));
            }
        }
        // Simultaneous dials: the connection dialed by the lower name wins, so the
        // lower-named node refuses the peer's dial while its own is in flight
        // (nothing has been written on either yet, so nothing is lost) -- if its
        // own dial goes where the peer's connection comes from. A dial to another
        // address (a wrong `addr` for the peer here) may never complete; refusing
        // would then keep the two nodes apart, so the peer's dial is taken and
        // the duplicate rule of `register` settles any race.
        if self.name < peer.name && peer.dialing.load(Ordering::Acquire) {
            let from = conn.remote_address();
            if canonical(from) == canonical(peer.addr) {
                close(
                    &conn,
                    wire::CLOSE_DUPLICATE,
                    "simultaneous dial; keeping mine",
                );
                debug!(node = %self.name, peer = %peer.name, "refused simultaneous dial from higher-named peer");
                return Ok(());
            }
            warn!(
                node = %self.name, peer = %peer.name, remote = %from, addr = %peer.addr,
                "accepting the peer's connection while dialing it at another address: \
                 is the configured addr of {:?} in [[peers]] right?", peer.name
            );
        }
        // Decide on duplicates before answering, so a losing dialer hears why.
        match self
            .register(&peer, conn.clone(), false, theirs.incarnation)
            .await
        {
            Ok(()) => {}
            Err(Registration::Duplicate) => {
                debug!(node = %self.name, peer = %peer.name, "refused duplicate connection; keeping the existing one");
                return Ok(());
            }
            Err(Registration::ShuttingDown) => return Err("transport is shutting down".into()),
        }
        let hello = self.hello().encode().map_err(|e| e.to_string())?;
        send.write_all(&hello)
            .await
            .map_err(|e| format!("sending hello to {:?}: {e}", theirs.name))?;
        let _ = send.finish();
        Ok(())
    }
}
