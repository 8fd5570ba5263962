//! The `counter` app: one actor, `counter`, to exercise tell and ask
//! across nodes, and its routes on the node's HTTP endpoint:
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/<app>` | `{"value": n}`: this node's counter |
//! | `POST /v1/<app>/add` `{"amount": n}` | adds `n`; `{"value": new}` |
//!
//! Both talk to the node's `counter` actor (the same one remote nodes reach
//! with `Add`/`Get`); while it is not running they answer 503.
//!
//! [`AddInOrder`] adds too, and carries a sequence number of its sender's
//! stream: the counter checks that each stream's messages arrive in the
//! order they were numbered, and [`GetOrder`] reads what it saw — how tests
//! check the framework's per-sender order end to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe::app::{AppContext, AppKind, AppSpec};
use troupe::http::actix_web::web;
use troupe::http::{ApiError, AppRoutes, HttpContext, Json};
use troupe::prelude::*;

use super::status::NoSettings;

/// Actor name of the counter app.
pub const COUNTER: &str = "counter";

/// Add to the counter; answers the new value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add(pub i64);
remote_message!(Add, "troupe.counter.add", i64);

/// Read the counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Get;
remote_message!(Get, "troupe.counter.get", i64);

/// Ask this node's counter to add `amount` to the counter on `node` and
/// answer what that node replied: actor-to-actor traffic across nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The node whose counter to ask.
    pub node: String,
    /// How much to add.
    pub amount: i64,
}
remote_message!(Forward, "troupe.counter.forward", Result<i64, String>);

/// Add `amount`, as message number `seq` (0, 1, 2, ...) of the stream
/// named `stream` (one per sender): the counter notes whether it arrived in
/// order. Answers the new value, like [`Add`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddInOrder {
    /// The sender's stream (any name; one sequence per name).
    pub stream: String,
    /// This message's number in its stream, from 0.
    pub seq: u64,
    /// How much to add.
    pub amount: i64,
}
remote_message!(AddInOrder, "troupe.counter.add-in-order", i64);

/// What the counter saw of stream `0` of [`AddInOrder`] messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetOrder(pub String);
remote_message!(GetOrder, "troupe.counter.order", StreamOrder);

/// The arrival order of one stream of [`AddInOrder`] messages, as the
/// counter saw it (all zero for a stream it never heard of).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOrder {
    /// Messages received.
    pub received: u64,
    /// The number the next message should carry: one past the last one
    /// received.
    pub next: u64,
    /// Messages whose number was not the one expected (a gap, a repeat or
    /// an overtaking message).
    pub out_of_order: u64,
    /// The first of those: (the number expected, the number received).
    pub first_out_of_order: Option<(u64, u64)>,
}

impl StreamOrder {
    /// Note the arrival of message `seq`.
    fn arrived(&mut self, seq: u64) {
        self.received += 1;
        if seq != self.next {
            self.out_of_order += 1;
            self.first_out_of_order.get_or_insert((self.next, seq));
        }
        self.next = seq.saturating_add(1);
    }
}

/// The counter app's actor.
pub struct Counter {
    node: Node,
    value: i64,
    /// Per stream of [`AddInOrder`] messages (lost on a restart, like the
    /// value).
    streams: HashMap<String, StreamOrder>,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = i64;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> i64 {
        self.value += m.0;
        self.value
    }
}

impl Handler<AddInOrder> for Counter {
    type Result = i64;
    fn handle(&mut self, m: AddInOrder, _: &mut Context<Self>) -> i64 {
        self.streams.entry(m.stream).or_default().arrived(m.seq);
        self.value += m.amount;
        self.value
    }
}

impl Handler<GetOrder> for Counter {
    type Result = MessageResult<GetOrder>;
    fn handle(&mut self, m: GetOrder, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.streams.get(&m.0).copied().unwrap_or_default())
    }
}

impl Handler<Get> for Counter {
    type Result = i64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> i64 {
        self.value
    }
}

impl Handler<Forward> for Counter {
    type Result = ResponseFuture<Result<i64, String>>;
    fn handle(&mut self, m: Forward, _: &mut Context<Self>) -> Self::Result {
        let target = self.node.lookup::<Add>(&format!("{}/{COUNTER}", m.node));
        Box::pin(async move {
            let target = target.map_err(|e| e.to_string())?;
            target
                .ask(Add(m.amount))
                .timeout(Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The counter app of `ctx`'s node: its actor is named [`COUNTER`].
pub fn counter_app(ctx: &AppContext) -> AppSpec {
    let node = ctx.node().clone();
    AppSpec::new(ctx.name()).child(
        ActorSpec::new(COUNTER, move || Counter {
            node: node.clone(),
            value: 0,
            streams: HashMap::new(),
        })
        .handles::<Add>()
        .handles::<Get>()
        .handles::<Forward>()
        .handles::<AddInOrder>()
        .handles::<GetOrder>(),
    )
}

/// The `counter` app kind: no settings.
pub struct CounterKind;

impl CounterKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "counter";
}

impl AppKind for CounterKind {
    type Settings = NoSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn build(&self, ctx: &AppContext, _: NoSettings) -> Result<AppSpec, troupe::Error> {
        Ok(counter_app(ctx))
    }
    fn routes(&self, _: &NoSettings) -> Option<AppRoutes> {
        Some(counter_routes())
    }
}

/// How long a route waits for the counter actor.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `POST /v1/<app>/add`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// How much to add (may be negative).
    pub amount: i64,
}

/// `GET /v1/<app>` and `POST /v1/<app>/add`.
pub fn counter_routes() -> AppRoutes {
    Arc::new(|cfg: &mut web::ServiceConfig| {
        cfg.service(web::resource("").get(read_counter))
            .service(web::resource("/add").post(add_to_counter));
    })
}

/// Ask this node's counter `m`, or a 503 saying why it did not answer.
async fn ask_counter<M>(node: &Node, m: M) -> Result<i64, ApiError>
where
    M: RemoteMessage<Reply = i64>,
{
    let path = format!("{}/{COUNTER}", node.name());
    let counter = node
        .lookup::<M>(&path)
        .map_err(|e| ApiError::unavailable(format!("no counter: {e}")))?;
    counter
        .ask(m)
        .timeout(ASK_TIMEOUT)
        .await
        .map_err(|e| ApiError::unavailable(format!("the counter app does not answer: {e}")))
}

async fn read_counter(ctx: web::Data<HttpContext>) -> Result<web::Json<Value>, ApiError> {
    let value = ask_counter(ctx.node(), Get).await?;
    Ok(web::Json(json!({ "value": value })))
}

async fn add_to_counter(
    ctx: web::Data<HttpContext>,
    body: Json<AddBody>,
) -> Result<web::Json<Value>, ApiError> {
    let value = ask_counter(ctx.node(), Add(body.0.amount)).await?;
    Ok(web::Json(json!({ "value": value })))
}

#[cfg(test)]
mod tests {
    use super::StreamOrder;

    #[test]
    fn a_stream_in_order_has_nothing_out_of_order() {
        let mut o = StreamOrder::default();
        for seq in 0..5 {
            o.arrived(seq);
        }
        assert_eq!(
            o,
            StreamOrder {
                received: 5,
                next: 5,
                out_of_order: 0,
                first_out_of_order: None
            }
        );
    }

    #[test]
    fn swaps_gaps_and_repeats_are_counted() {
        let mut o = StreamOrder::default();
        for seq in [0, 2, 1, 3, 3, 5] {
            o.arrived(seq);
        }
        assert_eq!(o.received, 6);
        assert_eq!(o.next, 6);
        // 2 (expected 1), 1 (expected 3), 3 (expected 2), 3 again
        // (expected 4), 5 (expected 4).
        assert_eq!(o.out_of_order, 5);
        assert_eq!(o.first_out_of_order, Some((1, 2)));
    }
}
