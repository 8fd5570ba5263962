//! The `chat` app: rooms of messages and replies, spread to every node by
//! causal broadcast ([`troupe::broadcast`]), so that no node ever shows a
//! reply before the message it answers.
//!
//! ```toml
//! [apps.chat]
//! algorithm = "causal"          # or "fifo", "eager-reliable", "total-sequencer" (default causal)
//! members = ["n1", "n2", "n3"]  # optional; default: this node and all its peers
//! ```
//!
//! **Tree** (rest-for-one, below `apps/NAME`): the protocol actor
//! `broadcast.NAME` (one group for all rooms), then `chat`, the room
//! keeper: it reads the group's deliveries in delivery order (from the
//! group's durable delivery log, so after a restart it has the node's whole
//! history again, each message once) and answers the routes. A node runs at
//! most one chat app (its keeper is the actor `chat`).
//!
//! **Routes** on the node's HTTP endpoint:
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/{room}` `{"text":"..","reply_to":"<id>"\|null}` | 200 `{"id":"<node>:<n>"}` once the message is durable here; 400 for a bad room name, an empty text, or a `reply_to` not delivered on this node |
//! | `GET /v1/chat/{room}?after=<n>` | `{"messages":[{"n":..,"id":..,"sender":..,"text":..,"reply_to":..,"vector":{"<node>":<count>,..},"held_back":bool},..]}`: this node's deliveries in that room with `n > after` (default 0), in delivery order |
//!
//! `n` numbers this node's deliveries (all rooms together) from 1, across
//! restarts; a reader passes the last `n` it saw as `after`. `vector` is
//! the message's causal stamp: how many messages of each node its sender
//! had delivered when it sent it, its own included. `held_back` says the
//! message reached this node before something it depends on (under causal
//! order, a message its sender had seen, such as the one it answers) and
//! waited in the hold-back queue.
//!
//! **Why replies never come first.** A reply may only answer a message
//! already delivered on the node it is posted to (the route refuses
//! others), so the answered message is in the reply's causal past, and
//! causal broadcast delivers it first at every node. With `algorithm =
//! "eager-reliable"` (no order) a reply can overtake its question: the
//! keeper then shows it with `"held_back": false` before the question, which
//! is the difference the course's hold-back queue exists for.
//!
//! Known limit: every node keeps its whole history in memory (and the
//! group's log on disk); old rooms are never forgotten.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe::app::{check_members, AppContext, AppKind, AppSpec, ClusterInfo};
use troupe::broadcast::{prepare_broadcast, BroadcastGroup, Delivery, MessageId};
use troupe::dashboard::{AppPanel, Panel};
use troupe::http::actix_web::{web, HttpResponse};
use troupe::http::{ApiError, AppRoutes, HttpContext, Json};
use troupe::prelude::*;
use troupe::protocols::broadcast::BroadcastConfig;

/// Actor name of the chat app's room keeper (one per node).
pub const CHAT: &str = "chat";

/// How long a route waits for the keeper.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[apps.chat]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// The broadcast algorithm (default causal).
    #[serde(default = "default_algorithm")]
    pub algorithm: BroadcastAlgorithm,
    /// Who takes part (default: this node and all its peers).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

fn default_algorithm() -> BroadcastAlgorithm {
    BroadcastAlgorithm::Causal
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            algorithm: default_algorithm(),
            members: None,
        }
    }
}

/// What is broadcast: one chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// Its room.
    pub room: String,
    /// What it says.
    pub text: String,
    /// The id of the message it answers, if any (`node:n`).
    pub reply_to: Option<String>,
}

/// A message as a node shows it (`GET /v1/chat/{room}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEntry {
    /// Its position among this node's deliveries (all rooms), from 1.
    pub n: u64,
    /// Its id, `node:n` (the sender and its number among the sender's
    /// messages).
    pub id: String,
    /// The node it was posted to.
    pub sender: String,
    /// Its room.
    pub room: String,
    /// What it says.
    pub text: String,
    /// The id of the message it answers.
    pub reply_to: Option<String>,
    /// Its causal stamp, per node.
    pub vector: BTreeMap<String, u64>,
    /// It waited in the hold-back queue here.
    pub held_back: bool,
}

/// A message's id as the chat writes it: `node:n`.
pub fn message_key(id: &MessageId) -> String {
    format!("{}:{}", id.origin, id.seq)
}

fn entry(d: Delivery<ChatLine>) -> ChatEntry {
    let vector = d
        .stamps
        .vector
        .map(|v| {
            v.iter()
                .map(|(k, n)| (k.trim_matches('"').to_string(), n))
                .collect()
        })
        .unwrap_or_default();
    ChatEntry {
        n: d.index,
        id: message_key(&d.id),
        sender: d.sender,
        room: d.payload.room,
        text: d.payload.text,
        reply_to: d.payload.reply_to,
        vector,
        held_back: d.held_back,
    }
}

/// Post a message (asked of this node's keeper): the new message's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Post(pub ChatLine);
remote_message!(Post, "troupe.chat.post", Result<String, PostError>);

/// Why a post was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostError {
    /// The request is wrong (the message says why).
    Bad(String),
    /// The broadcast group failed.
    Unavailable(String),
}

/// Read a room's messages delivered here after `after`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRoom {
    /// The room.
    pub room: String,
    /// Only messages with `n > after`.
    pub after: u64,
}
remote_message!(ReadRoom, "troupe.chat.read", Vec<ChatEntry>);

/// What the keeper holds, room by room (for the dashboard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRooms;
remote_message!(GetRooms, "troupe.chat.rooms", ChatRooms);

/// The answer to [`GetRooms`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRooms {
    /// Messages delivered on this node, all rooms together.
    pub delivered: u64,
    /// Of them, those that waited in the hold-back queue.
    pub held_back: u64,
    /// Per room: its messages and the last one's id.
    pub rooms: BTreeMap<String, (u64, String)>,
}

/// What the keeper has delivered: every entry, and the ids seen.
#[derive(Debug, Default)]
struct History {
    entries: Vec<ChatEntry>,
    ids: BTreeMap<String, u64>,
}

/// The room keeper (see the module docs).
struct Keeper {
    group: BroadcastGroup<ChatLine>,
    history: Arc<Mutex<History>>,
}

impl Actor for Keeper {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let (group, history) = (self.group.clone(), self.history.clone());
        ctx.spawn(follow(group, history).into_actor(self).map(|(), _, ctx| {
            // The group stopped or its log could not be read: restart.
            ctx.stop();
        }));
    }
}

/// Copy the group's deliveries into `history`, in order, from the first
/// this history lacks.
async fn follow(group: BroadcastGroup<ChatLine>, history: Arc<Mutex<History>>) {
    let after = history
        .lock()
        .expect("history")
        .entries
        .last()
        .map_or(0, |e| e.n);
    let mut d = match group.deliveries(after).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "chat: cannot read the deliveries");
            return;
        }
    };
    loop {
        match d.next().await {
            Ok(Some(x)) => {
                let e = entry(x);
                let mut h = history.lock().expect("history");
                h.ids.insert(e.id.clone(), e.n);
                h.entries.push(e);
            }
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "chat: a delivery was skipped"),
        }
    }
}

fn check_line(line: &ChatLine, history: &History) -> Result<(), String> {
    troupe::framework::ids::validate_name(&line.room).map_err(|_| {
        format!(
            "room {:?}: use letters, digits, '.', '_' or '-' (at most 64)",
            line.room
        )
    })?;
    if line.text.trim().is_empty() {
        return Err("text: empty".into());
    }
    if line.text.len() > 4096 {
        return Err("text: longer than 4096 bytes".into());
    }
    if let Some(r) = &line.reply_to {
        if !history.ids.contains_key(r) {
            return Err(format!(
                "reply_to: no message {r:?} has been delivered on this node (a reply answers a message its node has shown)"
            ));
        }
    }
    Ok(())
}

impl Handler<Post> for Keeper {
    type Result = ResponseFuture<Result<String, PostError>>;
    fn handle(&mut self, Post(line): Post, _: &mut Context<Self>) -> Self::Result {
        let checked = check_line(&line, &self.history.lock().expect("history"));
        let group = self.group.clone();
        Box::pin(async move {
            checked.map_err(PostError::Bad)?;
            let id = group
                .broadcast(&line)
                .await
                .map_err(|e| PostError::Unavailable(e.to_string()))?;
            Ok(message_key(&id))
        })
    }
}

impl Handler<GetRooms> for Keeper {
    type Result = MessageResult<GetRooms>;
    fn handle(&mut self, _: GetRooms, _: &mut Context<Self>) -> Self::Result {
        let h = self.history.lock().expect("history");
        let mut r = ChatRooms {
            delivered: h.entries.len() as u64,
            ..ChatRooms::default()
        };
        for e in &h.entries {
            r.held_back += u64::from(e.held_back);
            let room = r.rooms.entry(e.room.clone()).or_default();
            room.0 += 1;
            room.1.clone_from(&e.id);
        }
        MessageResult(r)
    }
}

impl Handler<ReadRoom> for Keeper {
    type Result = MessageResult<ReadRoom>;
    fn handle(&mut self, m: ReadRoom, _: &mut Context<Self>) -> Self::Result {
        let h = self.history.lock().expect("history");
        // Entries are in `n` order: skip to the first after `after`.
        let from = h.entries.partition_point(|e| e.n <= m.after);
        MessageResult(
            h.entries[from..]
                .iter()
                .filter(|e| e.room == m.room)
                .cloned()
                .collect(),
        )
    }
}

/// The `chat` app kind.
pub struct ChatKind;

impl ChatKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "chat";
}

impl AppKind for ChatKind {
    type Settings = ChatSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn check(&self, s: &ChatSettings, cluster: &ClusterInfo) -> Result<(), String> {
        check_members(s.members.as_deref().unwrap_or_default(), cluster)
    }
    fn build(&self, ctx: &AppContext, s: ChatSettings) -> Result<AppSpec, troupe::Error> {
        let members = s.members.clone().unwrap_or_else(|| ctx.members());
        let config = BroadcastConfig {
            keep_log: true,
            ..BroadcastConfig::default()
        };
        let (driver, group) =
            prepare_broadcast::<ChatLine>(ctx.node(), ctx.name(), s.algorithm, &members, config)?;
        // The keeper's history outlives its restarts (it resumes from the
        // last entry); a restart of the node rebuilds it from the log.
        let history: Arc<Mutex<History>> = Arc::default();
        Ok(AppSpec::new(ctx.name())
            .strategy(Strategy::RestForOne)
            .child(driver)
            .child(
                ActorSpec::new(CHAT, move || Keeper {
                    group: group.clone(),
                    history: history.clone(),
                })
                .handles::<Post>()
                .handles::<ReadRoom>()
                .handles::<GetRooms>(),
            ))
    }
    fn routes(&self, _: &ChatSettings) -> Option<AppRoutes> {
        Some(chat_routes())
    }
    fn panel(&self, _: &ChatSettings) -> Option<AppPanel> {
        Some(Arc::new(|node: Node| Box::pin(chat_panel(node))))
    }
}

/// The chat's dashboard panel: messages delivered here, held back, and
/// per room how many and the last one.
async fn chat_panel(node: Node) -> Result<Panel, String> {
    let r = crate::sample::ask_local(&node, CHAT, GetRooms, crate::sample::PANEL_TIMEOUT).await?;
    let rows = r
        .rooms
        .iter()
        .map(|(room, (n, last))| vec![room.clone(), n.to_string(), last.clone()])
        .collect();
    Ok(Panel::new("chat: causal broadcast")
        .field("delivered here", r.delivered)
        .field("held back first", r.held_back)
        .table(&["room", "messages", "last"], rows))
}

/// The body of `POST /v1/chat/{room}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    /// What it says.
    pub text: String,
    /// The id of the message it answers (`node:n`), or null.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// The query of `GET /v1/chat/{room}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Only messages with `n > after` (default 0).
    #[serde(default)]
    pub after: u64,
}

/// The chat's routes (see the module docs).
pub fn chat_routes() -> AppRoutes {
    Arc::new(|cfg: &mut web::ServiceConfig| {
        cfg.service(web::resource("/{room}").post(post_route).get(read_route));
    })
}

async fn ask_keeper<M: RemoteMessage>(node: &Node, m: M) -> Result<M::Reply, ApiError> {
    crate::sample::ask_local(node, CHAT, m, ROUTE_TIMEOUT)
        .await
        .map_err(ApiError::unavailable)
}

async fn post_route(
    ctx: web::Data<HttpContext>,
    room: web::Path<String>,
    body: Json<PostBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.0;
    let line = ChatLine {
        room: room.into_inner(),
        text: b.text,
        reply_to: b.reply_to,
    };
    match ask_keeper(ctx.node(), Post(line)).await? {
        Ok(id) => Ok(HttpResponse::Ok().json(json!({ "id": id }))),
        Err(PostError::Bad(e)) => Err(ApiError::bad_request(e)),
        Err(PostError::Unavailable(e)) => Err(ApiError::unavailable(e)),
    }
}

async fn read_route(
    ctx: web::Data<HttpContext>,
    room: web::Path<String>,
    query: web::Query<ReadQuery>,
) -> Result<web::Json<Value>, ApiError> {
    let room = room.into_inner();
    troupe::framework::ids::validate_name(&room)
        .map_err(|_| ApiError::bad_request(format!("room {room:?}: not a room name")))?;
    let messages = ask_keeper(
        ctx.node(),
        ReadRoom {
            room,
            after: query.after,
        },
    )
    .await?;
    Ok(web::Json(json!({ "messages": messages })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(room: &str, text: &str, reply_to: Option<&str>) -> ChatLine {
        ChatLine {
            room: room.into(),
            text: text.into(),
            reply_to: reply_to.map(String::from),
        }
    }

    #[test]
    fn posts_are_checked_naming_the_field() {
        let mut h = History::default();
        h.ids.insert("a:1".into(), 1);
        assert_eq!(check_line(&line("lobby", "hi", None), &h), Ok(()));
        assert_eq!(check_line(&line("lobby", "yes", Some("a:1")), &h), Ok(()));
        for (l, want) in [
            (line("a room", "hi", None), "room \"a room\""),
            (line("lobby", "  ", None), "text: empty"),
            (
                line("lobby", "x", Some("b:7")),
                "reply_to: no message \"b:7\"",
            ),
        ] {
            let err = check_line(&l, &h).expect_err(want);
            assert!(err.starts_with(want), "{err}");
        }
    }
}
