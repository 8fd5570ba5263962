//! Transaction ids unique across the group, and across this node's lives.
//!
//! A [`TxId`] is `(index of the coordinator in the sorted group) << 48 |
//! sequence`: two nodes never draw the same id, and a node draws its
//! sequence numbers from blocks reserved durably in the node's store
//! (namespace `commit-ids.<instance>`, key `next`), so a restarted node
//! never reuses one. A block is [`BLOCK`] ids; the next one is reserved in
//! the background once half of the current one is used.

use std::sync::{Arc, Mutex};

use troupe_framework::storage::Write;
use troupe_framework::Node;
use troupe_protocols::commit::TxId;

use crate::Error;

/// Ids reserved at a time.
pub(crate) const BLOCK: u64 = 1 << 20;
/// Bits of the sequence number in a [`TxId`].
const SEQ_BITS: u32 = 48;

/// The coordinator's index in the sorted group, as an id made here says.
pub(crate) fn coordinator_index(tx: TxId) -> usize {
    (tx >> SEQ_BITS) as usize
}

#[derive(Debug)]
struct Range {
    next: u64,
    limit: u64,
    reserving: bool,
}

/// The id source of one commit instance on one node. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TxIds {
    node: Node,
    namespace: String,
    prefix: u64,
    range: Arc<Mutex<Range>>,
}

impl TxIds {
    /// Reserve the first block for member number `index` of the group.
    pub(crate) async fn reserve(node: &Node, instance: &str, index: usize) -> Result<Self, Error> {
        if index >= 1 << (64 - SEQ_BITS) {
            return Err(Error::Config(format!(
                "commit {instance:?}: more than {} members",
                1u64 << (64 - SEQ_BITS)
            )));
        }
        let namespace = format!("commit-ids.{instance}");
        let (next, limit) = reserve_block(node, &namespace).await?;
        Ok(Self {
            node: node.clone(),
            namespace,
            prefix: (index as u64) << SEQ_BITS,
            range: Arc::new(Mutex::new(Range {
                next,
                limit,
                reserving: false,
            })),
        })
    }

    /// A fresh id, or an error while the next block is not durable yet
    /// (after more than [`BLOCK`] / 2 ids drawn faster than one write).
    pub(crate) fn next(&self) -> Result<TxId, Error> {
        let mut r = self.range.lock().unwrap_or_else(|e| e.into_inner());
        if r.next >= r.limit {
            return Err(Error::Protocol(
                "transaction ids: the next block is not reserved yet; try again".into(),
            ));
        }
        if r.next >= 1 << SEQ_BITS {
            return Err(Error::Protocol("transaction ids exhausted".into()));
        }
        let seq = r.next;
        r.next += 1;
        if r.limit - r.next < BLOCK / 2 && !r.reserving {
            r.reserving = true;
            let this = self.clone();
            actix_rt::spawn(async move {
                let got = reserve_block(&this.node, &this.namespace).await;
                let mut r = this.range.lock().unwrap_or_else(|e| e.into_inner());
                r.reserving = false;
                match got {
                    // The block starts where the store's last one ended: ours.
                    Ok((_, limit)) => r.limit = limit,
                    Err(e) => tracing::warn!(error = %e, "cannot reserve transaction ids"),
                }
            });
        }
        Ok(self.prefix | seq)
    }
}

/// Reserve the next block: `(first, limit)`, durable before it is used.
async fn reserve_block(node: &Node, namespace: &str) -> Result<(u64, u64), Error> {
    let store = node.store();
    let recovered = store
        .load(namespace)
        .map_err(|e| Error::Protocol(format!("transaction ids: {e}")))?;
    let first: u64 = recovered
        .get_as("next")
        .map_err(|e| Error::Protocol(format!("transaction ids: {e}")))?
        .unwrap_or(1);
    let limit = first + BLOCK;
    let value =
        rmp_serde::to_vec(&limit).map_err(|e| Error::Protocol(format!("transaction ids: {e}")))?;
    store
        .submit(
            namespace,
            vec![Write::Put {
                key: "next".into(),
                value,
            }],
        )
        .wait()
        .await
        .map_err(|e| Error::Protocol(format!("transaction ids: {e}")))?;
    Ok((first, limit))
}
