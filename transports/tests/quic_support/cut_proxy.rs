//! A UDP relay in front of a QUIC node that can cut the link: while cut it
//! drops every datagram both ways, so the QUIC connection through it idles
//! out and the transport reconnects once the cut ends. A real connection
//! loss on loopback, where `tc netem` is not available. Shared by the
//! reliable-delivery tests and benchmark (`#[path]`-included).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// A relay listening on [`CutProxy::addr`] and forwarding to a target.
pub struct CutProxy {
    /// Where peers should send (give this as the target node's address).
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl CutProxy {
    /// Start relaying to `target` (each client gets its own upstream
    /// socket, so the target sees one address per client).
    pub async fn start(target: SocketAddr) -> Arc<CutProxy> {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy"));
        let proxy = Arc::new(CutProxy {
            addr: sock.local_addr().expect("proxy addr"),
            cut: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
            tasks: Mutex::new(Vec::new()),
        });
        let (cut, dropped) = (proxy.cut.clone(), proxy.dropped.clone());
        let weak = Arc::downgrade(&proxy);
        let main = tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if cut.load(Ordering::SeqCst) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let up = match upstreams.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let u =
                            Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream"));
                        if u.connect(target).await.is_err() {
                            continue;
                        }
                        let (u2, s2, cut2, dropped2) =
                            (u.clone(), sock.clone(), cut.clone(), dropped.clone());
                        let back = tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = u2.recv(&mut buf).await {
                                if cut2.load(Ordering::SeqCst) {
                                    dropped2.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                let _ = s2.send_to(&buf[..n], client).await;
                            }
                        });
                        if let Some(p) = weak.upgrade() {
                            p.tasks.lock().unwrap().push(back);
                        }
                        upstreams.insert(client, u.clone());
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        });
        proxy.tasks.lock().unwrap().push(main);
        proxy
    }

    /// Cut (`true`) or restore (`false`) the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// Datagrams dropped by cuts so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}
