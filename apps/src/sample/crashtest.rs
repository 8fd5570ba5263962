//! The `crashtest` app: a three-level tree whose leaves fail on request,
//! to watch supervision at work (and to test it from outside a node).
//!
//! ```text
//! apps/NAME                 the app's root ([apps.NAME.supervision])
//! ├── NAME.first            a leaf
//! ├── inner                 a nested supervisor ([apps.NAME.inner])
//! │   ├── NAME.leaf-1       leaves (`leaves` of them, default 3)
//! │   └── ...
//! └── NAME.last             a leaf
//! ```
//!
//! Tell a leaf [`Crash`] to make it panic, fail (an error through
//! `or_fail`) or stop, and watch the strategies and the escalation with
//! the status app's [`GetTree`](super::GetTree):
//!
//! ```toml
//! [apps.crash]
//! kind = "crashtest"
//! leaves = 3
//! [apps.crash.inner]            # the nested supervisor's policy (same keys as supervision)
//! strategy = "one-for-all"
//! max_restarts = 1
//! ```

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use troupe::app::{AppContext, AppKind, AppSpec, ClusterInfo, PolicyOverrides};
use troupe::prelude::*;

/// How a leaf should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashHow {
    /// Panic in the handler.
    Panic,
    /// Fail: return an error through `or_fail`.
    Fail,
    /// Stop itself without an error.
    Stop,
}

/// Make a `crashtest` leaf end the way it says (tell it; an ask would see
/// the leaf stop before it answers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crash(pub CrashHow);
remote_message!(Crash, "troupe.crashtest.crash", ());

/// A leaf of the `crashtest` tree.
struct Leaf {
    name: String,
}

impl Actor for Leaf {
    type Context = Context<Self>;
}

impl Handler<Crash> for Leaf {
    type Result = ();
    fn handle(&mut self, m: Crash, ctx: &mut Context<Self>) {
        match m.0 {
            CrashHow::Panic => panic!("crashtest leaf {} asked to panic", self.name),
            CrashHow::Fail => {
                let _ = Err::<(), String>(format!("crashtest leaf {} asked to fail", self.name))
                    .or_fail(ctx);
            }
            CrashHow::Stop => ctx.stop(),
        }
    }
}

fn leaf(name: String) -> ActorSpec<Leaf> {
    let n = name.clone();
    ActorSpec::new(name, move || Leaf { name: n.clone() }).handles::<Crash>()
}

/// Most leaves under `inner`.
const MAX_LEAVES: u32 = 16;

/// The `[apps.NAME]` settings of a `crashtest` app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashtestSettings {
    /// Leaves under the nested supervisor (1 to 16, default 3).
    #[serde(default = "default_leaves")]
    pub leaves: u32,
    /// The nested supervisor's policy, over the framework's defaults
    /// (one-for-one, 5 restarts in 10 s, escalate).
    #[serde(default)]
    pub inner: PolicyOverrides,
}

fn default_leaves() -> u32 {
    3
}

/// The `crashtest` app kind.
pub struct CrashtestKind;

impl CrashtestKind {
    /// Its name in `kind = "..."`.
    pub const KIND: &'static str = "crashtest";
}

impl AppKind for CrashtestKind {
    type Settings = CrashtestSettings;
    fn kind(&self) -> &'static str {
        Self::KIND
    }
    fn check(&self, s: &CrashtestSettings, _: &ClusterInfo) -> Result<(), String> {
        if !(1..=MAX_LEAVES).contains(&s.leaves) {
            return Err(format!(
                "leaves: must be between 1 and {MAX_LEAVES}, got {}",
                s.leaves
            ));
        }
        s.inner
            .apply(SupervisorPolicy::default())
            .validate("inner")
            .map_err(|e| e.to_string().replace("invalid configuration: ", ""))
    }
    fn build(&self, ctx: &AppContext, s: CrashtestSettings) -> Result<AppSpec, troupe::Error> {
        let name = ctx.name();
        let mut inner = SupervisorSpec::new("inner", s.inner.apply(SupervisorPolicy::default()));
        for i in 1..=s.leaves {
            inner = inner.child(leaf(format!("{name}.leaf-{i}")));
        }
        Ok(AppSpec::new(name)
            .child(leaf(format!("{name}.first")))
            .supervisor(inner)
            .child(leaf(format!("{name}.last"))))
    }
}
