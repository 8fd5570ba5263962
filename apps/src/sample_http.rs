//! The sample apps on the node's HTTP endpoint: the counter's routes, and
//! which apps run, for `/v1/status`.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/counter` | `{"value": n}`: this node's counter |
//! | `POST /v1/counter/add` `{"amount": n}` | adds `n`; `{"value": new}` |
//!
//! Both talk to the node's `counter` actor (the same one remote nodes
//! reach with `Add`/`Get`); while it is not running they answer 503.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use troupe::framework::{Node, RemoteMessage};
use troupe::http::actix_web::web;
use troupe::http::{ApiError, AppRouteRegistry, AppRoutes, AppState, AppsProbe, HttpContext, Json};

use crate::sample::{Add, AppsConfig, Get, COUNTER, STATUS};

/// How long a route waits for the counter actor.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `POST /v1/counter/add`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// How much to add (may be negative).
    pub amount: i64,
}

/// The HTTP routes of the apps `config` starts (today: the counter's).
pub fn app_routes(config: &AppsConfig) -> Result<AppRouteRegistry, troupe::Error> {
    let mut routes = AppRouteRegistry::new();
    if config.counter {
        routes.mount(COUNTER, counter_routes())?;
    }
    Ok(routes)
}

/// `GET /v1/counter` and `POST /v1/counter/add`.
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

/// Which of `config`'s apps run on `node` (by their actor), for
/// `/v1/status`: `running` while the actor is registered, else `stopped`.
pub fn apps_probe(node: &Node, config: &AppsConfig) -> AppsProbe {
    let mut apps: Vec<(&'static str, String)> = Vec::new();
    if config.status {
        apps.push(("status", STATUS.to_string()));
    }
    if config.counter {
        apps.push(("counter", COUNTER.to_string()));
    }
    if config.election.is_some() {
        apps.push(("election", troupe::leader::ELECTION_ACTOR.to_string()));
    }
    if let Some(lock) = &config.lock {
        // The lock's driver actor (`troupe::lock`'s storage key).
        apps.push(("lock", format!("mutex.{}", lock.resource)));
    }
    let node = node.clone();
    Arc::new(move || {
        apps.iter()
            .map(|(name, actor)| AppState {
                name: name.to_string(),
                state: if node.registry().is_running(actor) {
                    "running".into()
                } else {
                    "stopped".into()
                },
            })
            .collect()
    })
}
