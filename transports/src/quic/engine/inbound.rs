//! Inbound: the accept loop and the accepting side of the hello exchange.
//!
//! Each incoming connection gets its own task with the handshake timeout.
//! Only known peers (configured or added) are accepted, and only when the
//! certificate names the node the hello claims (unless in insecure dev mode);
//! with `accept_joins` an unknown node is accepted too when its certificate
//! chains to the cluster CA and names it, and its hello (version 2) says
//! where it listens: it is added to the peer table. Every refusal is logged
//! and closes only that connection. Simultaneous dials are settled
//! here (the connection dialed by the lower name wins) before anything is
//! written on either connection; the duplicate rule of [`Inner::register`]
//! settles the rest, before this side answers the hello, so a losing dialer
//! hears why.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::super::wire;
use super::links::Registration;
use super::reader::read_hello;
use super::{close, Inner};

use super::seeds::canonical;

/// Where to dial a node that said it listens at `listen` and whose
/// connection came from `from`: an unspecified IP is replaced by `from`'s.
fn dial_back(listen: SocketAddr, from: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(from.ip().to_canonical(), listen.port())
    } else {
        listen
    }
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
        let known = self.peers.load().get(&theirs.name).cloned();
        if known.is_none() && !self.cfg.accept_joins {
            return refuse(format!(
                "node {:?} is not a configured peer (only configured peers are accepted; \
                 set `seeds` in the config to let nodes join through this one)",
                theirs.name
            ));
        }
        // The certificate first: nothing is added for a node the CA did not vouch for.
        if let Some(checker) = &self.checker {
            if let Err(e) = checker.check(&conn, &theirs.name) {
                return refuse(format!("peer claiming {:?}: {e}", theirs.name));
            }
        }
        let listen = theirs.listen.map(|l| dial_back(l, conn.remote_address()));
        // The peer moved (restarted on another address): a dial of ours in
        // flight goes to the old one and must not keep its connection out.
        let mut moved = false;
        let peer = match (known, listen) {
            (Some(peer), None) => peer,
            (Some(peer), Some(addr)) => {
                if canonical(peer.addr()) != canonical(addr) {
                    debug!(node = %self.name, peer = %peer.name, old = %peer.addr(), new = %addr, "peer now listens elsewhere");
                    peer.set_addr(addr);
                    moved = true;
                }
                peer
            }
            (None, None) => {
                return refuse(format!(
                    "node {:?} is not a known peer and its hello (version 1) does not say where \
                     it listens: a joining node must be configured with `seeds`",
                    theirs.name
                ));
            }
            (None, Some(addr)) => match self.get_or_add(&theirs.name, addr) {
                Ok((peer, _)) => {
                    info!(node = %self.name, peer = %peer.name, %addr, "accepted joining node");
                    peer
                }
                Err(e) => return refuse(format!("joining node: {e}")),
            },
        };
        // Simultaneous dials: the connection dialed by the lower name wins, so the
        // lower-named node refuses the peer's dial while its own is in flight
        // (nothing has been written on either yet, so nothing is lost) -- if its
        // own dial goes where the peer's connection comes from. A dial to another
        // address (a wrong `addr` for the peer here) may never complete; refusing
        // would then keep the two nodes apart, so the peer's dial is taken and
        // the duplicate rule of `register` settles any race.
        if self.name < peer.name && peer.dialing.load(Ordering::Acquire) && !moved {
            let from = conn.remote_address();
            if canonical(from) == canonical(peer.addr()) {
                close(
                    &conn,
                    wire::CLOSE_DUPLICATE,
                    "simultaneous dial; keeping mine",
                );
                debug!(node = %self.name, peer = %peer.name, "refused simultaneous dial from higher-named peer");
                return Ok(());
            }
            warn!(
                node = %self.name, peer = %peer.name, remote = %from, addr = %peer.addr(),
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
        // Answer in the version we were greeted with (a version-1 node
        // cannot read version 2).
        let mut hello = self.hello();
        if theirs.listen.is_none() {
            hello.listen = None;
        }
        let hello = hello.encode().map_err(|e| e.to_string())?;
        send.write_all(&hello)
            .await
            .map_err(|e| format!("sending hello to {:?}: {e}", theirs.name))?;
        let _ = send.finish();
        Ok(())
    }
}
