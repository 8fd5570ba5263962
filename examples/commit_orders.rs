//! Atomic commit: an order that takes one item from two warehouses, on
//! nodes b and c, coordinated by node a — all of it or nothing.
//!
//! ```sh
//! cargo run --example commit_orders
//! cargo run --example commit_orders -- --trace orders.jsonl   # orders.two-phase.jsonl, orders.three-phase.jsonl
//! troupe trace view orders.two-phase.jsonl -o orders.html     # a space-time diagram
//! ```
//!
//! Three simulated nodes under virtual time (no network, a fraction of a
//! second). The part between the `README` markers is the README's "Atomic
//! commit" example (a test keeps them the same). The first order commits;
//! the second aborts because c is out of stock, and b puts its held item
//! back. The run checks this, and fails if it did not happen (the suite
//! runs the same check, `tests/examples.rs`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use troupe::prelude::*;

#[path = "common/trace_arg.rs"]
mod trace_arg;

// README: atomic commit (begin)
/// A participant's share of an order: one item from its stock.
struct Warehouse {
    stock: Rc<Cell<u32>>,
    held: RefCell<BTreeSet<TxId>>,
}

impl ResourceManager for Warehouse {
    async fn prepare(&self, tx: TxId) -> Result<(), String> {
        if self.stock.get() == 0 {
            return Err("out of stock".into()); // votes no: the order aborts
        }
        self.stock.set(self.stock.get() - 1); // held until the decision
        self.held.borrow_mut().insert(tx);
        Ok(())
    }
    async fn commit(&self, tx: TxId) {
        self.held.borrow_mut().remove(&tx); // shipped
    }
    async fn abort(&self, tx: TxId) {
        if self.held.borrow_mut().remove(&tx) {
            self.stock.set(self.stock.get() + 1); // put back
        }
    }
}

/// On every node: `start_commit(&node, "orders", CommitAlgorithm::TwoPhase,
/// &members, warehouse)`. On the coordinator, one order:
async fn order(orders: &CommitHandle) -> Result<Outcome, troupe::Error> {
    let tx = orders.begin(&["b".to_string(), "c".to_string()])?;
    // (hand b and c the order's details here, tagged with tx.id())
    tx.commit().await // Committed, or Aborted(reason): "c voted no: out of stock"
}
// README: atomic commit (end)

/// Run the example with `algorithm`, printing what happens when `verbose`;
/// `Err` says what did not happen as shown.
pub fn run(algorithm: CommitAlgorithm, verbose: bool) -> Result<(), String> {
    run_traced(algorithm, verbose, None)
}

/// [`run`], writing the run's trace to `trace` when given (before the
/// checks).
pub fn run_traced(
    algorithm: CommitAlgorithm,
    verbose: bool,
    trace: Option<std::path::PathBuf>,
) -> Result<(), String> {
    run_virtual(|| async move {
        let stocks: Vec<Rc<Cell<u32>>> = [0, 5, 1].map(|n| Rc::new(Cell::new(n))).to_vec();
        let handles: Rc<RefCell<Vec<CommitHandle>>> = Rc::default();
        let mut cluster = SimCluster::new(1, FaultPlan::reliable());
        let (s, h) = (stocks.clone(), handles.clone());
        cluster.on_start(move |node: Node| {
            let i = ["a", "b", "c"].iter().position(|n| *n == node.name());
            let stock = s[i.unwrap_or(0)].clone();
            let handles = h.clone();
            async move {
                let members = ["a", "b", "c"].map(String::from);
                let warehouse = Warehouse {
                    stock,
                    held: RefCell::default(),
                };
                match start_commit(&node, "orders", algorithm, &members, warehouse).await {
                    Ok(handle) => handles.borrow_mut().push(handle),
                    Err(e) => eprintln!("commit on {}: {e}", node.name()),
                }
            }
        });
        for n in ["a", "b", "c"] {
            cluster.add_node(n).await.map_err(|e| e.to_string())?;
        }
        let a = handles.borrow().first().cloned().ok_or("no commit on a")?;
        let first = order(&a).await.map_err(|e| e.to_string())?;
        let second = order(&a).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = (stocks[1].get(), stocks[2].get());
        if let Some(path) = &trace {
            trace_arg::write(path, &cluster.net().trace());
        }
        if verbose {
            println!("{algorithm}: first order {first:?}, second order {second:?}");
            println!("stock left: b {}, c {}", left.0, left.1);
        }
        if first != Outcome::Committed {
            return Err(format!("the first order: {first:?}"));
        }
        let expected = Outcome::Aborted(AbortReason::VotedNo {
            participant: "c".into(),
            reason: "out of stock".into(),
        });
        if second != expected {
            return Err(format!("the second order: {second:?}"));
        }
        if left != (4, 0) {
            return Err(format!("stock left (b, c) = {left:?}, not (4, 0)"));
        }
        Ok(())
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trace = trace_arg::take(&mut args);
    for algorithm in CommitAlgorithm::ALL {
        // One file per algorithm: `t.jsonl` -> `t.two-phase.jsonl`.
        let file = trace
            .as_ref()
            .map(|t| t.with_extension(format!("{algorithm}.jsonl")));
        if let Err(e) = run_traced(algorithm, true, file) {
            eprintln!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}
