//! The `election` app: leader election among the node's group.
//!
//! Its tree, rest-for-one: the protocol actor `election`
//! (started by [`start_election`]), then `leader`, an actor that logs every
//! change (`leader elected` with the term and leader, where an operator
//! looks: the node's log) and answers [`GetLeadership`]. If the protocol
//! actor fails, `leader` is restarted after it.

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::app::{check_members, AppContext, AppKind, AppSpec, ClusterInfo};
use troupe::prelude::*;

/// Actor name of the election app's watcher.
pub const LEADER: &str = "leader";

/// Ask the election app which term and leader this node knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetLeadership;
remote_message!(
    GetLeadership,
    "troupe.election.leader",
    (u64, Option<String>)
);

/// Watches the election: logs changes, answers [`GetLeadership`].
struct LeaderWatch {
    node: String,
    election: LeaderElection,
}

impl Actor for LeaderWatch {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        // A fresh receiver sees the current leadership as a change, so a
        // restarted watcher logs it again.
        let mut changes = self.election.watch();
        let node = self.node.clone();
        ctx.spawn(
            async move {
                while changes.changed().await.is_ok() {
                    let l = changes.borrow_and_update().clone();
                    match l.leader {
                        Some(leader) => {
                            tracing::info!(%node, term = l.term, %leader, "leader elected")
                        }
                        None => tracing::info!(%node, term = l.term, "no leader; electing"),
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<GetLeadership> for LeaderWatch {
    type Result = MessageResult<GetLeadership>;
    fn handle(&mut self, _: GetLeadership, _: &mut Context<Self>) -> Self::Result {
        let l = self.election.current();
        MessageResult((l.term, l.leader))
    }
}

/// The `[apps.election]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionSettings {
    /// The election algorithm: `"bully"`, `"ring"` or `"next-in-line"`.
    pub algorithm: ElectionAlgorithm,
    /// Who takes part (default: this node and all its peers).
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

/// The `election` app kind.
pub struct ElectionKind;

impl ElectionKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "election";
}

impl AppKind for ElectionKind {
    type Settings = ElectionSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn check(&self, s: &ElectionSettings, cluster: &ClusterInfo) -> Result<(), String> {
        check_members(s.members.as_deref().unwrap_or_default(), cluster)
    }
    fn build(&self, ctx: &AppContext, s: ElectionSettings) -> Result<AppSpec, troupe::Error> {
        let members = s.members.unwrap_or_else(|| ctx.members());
        let algorithm = s.algorithm;
        Ok(AppSpec::new(ctx.name())
            .strategy(Strategy::RestForOne)
            .start(move |app| async move {
                let election = start_election(app.node(), algorithm, &members).await?;
                let node = app.node().name().to_string();
                app.spawn(
                    ActorSpec::new(LEADER, move || LeaderWatch {
                        node: node.clone(),
                        election: election.clone(),
                    })
                    .handles::<GetLeadership>(),
                )
                .await
            }))
    }
}
