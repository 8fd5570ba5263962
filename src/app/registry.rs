//! Apps from a config file: a registry of app kinds, each with typed,
//! validated settings.
//!
//! A node's config names the apps to start in `[apps.NAME]` tables:
//!
//! ```toml
//! [apps.ledger-lock]              # the app's name: its path apps/ledger-lock in the tree
//! kind = "lock"                   # its kind (default: the table's name)
//! resource = "ledger"             # the kind's own settings...
//! algorithm = "ricart-agrawala"
//!
//! [apps.ledger-lock.supervision]  # optional: the app's root supervisor policy
//! strategy = "rest-for-one"       # each key overrides the kind's default
//! max_restarts = 3
//! on_give_up = "stop"             # "restart" (apps' default), "stop", "escalate", "stop-node"
//! ```
//!
//! Besides its kind's settings, every app table takes `kind`, `enabled`
//! (default `true`; `false` keeps the table but starts nothing) and
//! `supervision`. A registry can start some apps *by default*: they run
//! with default settings unless the config has a table for them (which may
//! say `enabled = false`).
//!
//! Guarantees: a config is checked whole before anything starts
//! ([`AppRegistry::plan`]); an unknown key is refused with its full name
//! (`apps.ledger-lock.algoritm`), an unknown kind with the list of known
//! ones, a value of the wrong type with the key it sits under. An embedding
//! program registers its own kinds next to the built-in ones
//! ([`AppRegistry::register`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use troupe_framework::{GiveUp, Node, Strategy, SupervisorPolicy};

use super::{start_app, App, AppSpec};
use crate::dashboard::{AppPanel, AppPanelRegistry};
use crate::failure_detector::FailureDetectorHandle;
use crate::http::{AppRouteRegistry, AppRoutes};
use crate::Error;

/// What the config says about the node, for checking app settings before
/// the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// This node's name.
    pub node: String,
    /// Its configured peers' names.
    pub peers: Vec<String>,
}

impl ClusterInfo {
    /// The node and peers of a node config.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            node: config.name.clone(),
            peers: config.peer_names(),
        }
    }
}

/// Check a `members` list: each is this node or one of its peers (a node
/// can only reach its peers), and appears once. Errors name the entry
/// (`members[1]: ...`), relative to the app's table.
pub fn check_members(members: &[String], cluster: &ClusterInfo) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in members.iter().enumerate() {
        if *m != cluster.node && !cluster.peers.contains(m) {
            return Err(format!(
                "members[{i}]: {m:?} is neither this node nor one of its [[peers]]"
            ));
        }
        if !seen.insert(m) {
            return Err(format!("members[{i}]: {m:?} is listed twice"));
        }
    }
    Ok(())
}

/// What an app kind gets to build an app: the node, the app's name (from
/// the config), the node's peers and failure detector.
#[derive(Clone)]
pub struct AppContext {
    node: Node,
    name: String,
    peers: Vec<String>,
    failure_detector: Option<FailureDetectorHandle>,
}

impl AppContext {
    /// The context of app `name` on `node`, with no peers and no failure
    /// detector.
    pub fn new(node: &Node, name: impl Into<String>) -> Self {
        Self {
            node: node.clone(),
            name: name.into(),
            peers: Vec::new(),
            failure_detector: None,
        }
    }
    /// With the node's configured peers.
    pub fn with_peers(mut self, peers: &[String]) -> Self {
        self.peers = peers.to_vec();
        self
    }
    /// With the node's failure detector.
    pub fn with_failure_detector(mut self, fd: Option<FailureDetectorHandle>) -> Self {
        self.failure_detector = fd;
        self
    }
    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }
    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The node's configured peers.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }
    /// The node's failure detector, if it runs one.
    pub fn failure_detector(&self) -> Option<&FailureDetectorHandle> {
        self.failure_detector.as_ref()
    }
    /// The default members of a group protocol: this node and all its peers,
    /// sorted.
    pub fn members(&self) -> Vec<String> {
        let mut all = self.peers.clone();
        all.push(self.node.name().to_string());
        all.sort();
        all.dedup();
        all
    }
}

/// A kind of app that a config can start: `kind = "<KIND>"` in an
/// `[apps.NAME]` table.
pub trait AppKind: Send + Sync + 'static {
    /// The kind's settings: the keys of its table other than `kind`,
    /// `enabled` and `supervision`. Derive `Deserialize` with
    /// `#[serde(deny_unknown_fields)]` (and defaults where a key is
    /// optional) so that typos are refused.
    type Settings: DeserializeOwned + Send + 'static;

    /// The kind's name, as written after `kind =`.
    fn kind(&self) -> &'static str;

    /// Check settings against the node's config, before anything starts.
    /// Errors name the key relative to the app's table (`members[1]: ...`);
    /// they are reported as `apps.NAME.<error>`.
    fn check(&self, settings: &Self::Settings, cluster: &ClusterInfo) -> Result<(), String> {
        let _ = (settings, cluster);
        Ok(())
    }

    /// Build the app named `ctx.name()` from its settings. The app's policy
    /// set here is the default that `[apps.NAME.supervision]` overrides.
    fn build(&self, ctx: &AppContext, settings: Self::Settings) -> Result<AppSpec, Error>;

    /// The HTTP routes the app serves under `/v1/NAME/...` on the node's
    /// endpoint (when it has one), given its settings; none by default.
    /// Handlers reach the node through
    /// `web::Data<`[`crate::http::HttpContext`]`>`; the endpoint applies its
    /// token check, body limit and JSON errors to them.
    fn routes(&self, settings: &Self::Settings) -> Option<AppRoutes> {
        let _ = settings;
        None
    }

    /// The panel the app shows on the node's dashboard (see
    /// [`crate::dashboard`]), given its settings; none by default. It is
    /// built each time a dashboard asks, on the node, and only reads.
    fn panel(&self, settings: &Self::Settings) -> Option<AppPanel> {
        let _ = settings;
        None
    }
}

/// Optional overrides of a supervisor policy, as written in a config table
/// (`[apps.NAME.supervision]`): each key given replaces the default's.
/// Durations are whole milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    /// `"one-for-one"`, `"one-for-all"` or `"rest-for-one"`.
    pub strategy: Option<Strategy>,
    /// Restarts allowed within `within`.
    pub max_restarts: Option<u32>,
    /// The intensity window, in ms.
    pub within: Option<u64>,
    /// First back-off, in ms.
    pub backoff_base: Option<u64>,
    /// Largest back-off (and delay of a whole restart), in ms.
    pub backoff_max: Option<u64>,
    /// `"restart"`, `"stop"`, `"escalate"` or `"stop-node"`.
    pub on_give_up: Option<GiveUp>,
}

impl PolicyOverrides {
    /// `policy` with these overrides.
    pub fn apply(&self, policy: SupervisorPolicy) -> SupervisorPolicy {
        let ms = std::time::Duration::from_millis;
        SupervisorPolicy {
            strategy: self.strategy.unwrap_or(policy.strategy),
            max_restarts: self.max_restarts.unwrap_or(policy.max_restarts),
            within: self.within.map(ms).unwrap_or(policy.within),
            backoff_base: self.backoff_base.map(ms).unwrap_or(policy.backoff_base),
            backoff_max: self.backoff_max.map(ms).unwrap_or(policy.backoff_max),
            on_give_up: self.on_give_up.unwrap_or(policy.on_give_up),
        }
    }

    /// Read overrides from a config table; errors name the key under `key`.
    pub fn from_table(table: toml::Table, key: &str) -> Result<Self, Error> {
        deserialize_at(table, key)
    }
}

/// Deserialize `table` as a `T`; an error names the failing key below `key`.
fn deserialize_at<T: DeserializeOwned>(table: toml::Table, key: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let at = e.path().to_string();
        // toml adds its own "in `key`" line: the path already says where.
        let inner = e.inner().to_string();
        let what = inner.lines().next().unwrap_or_default().to_string();
        let key = if at == "." || at.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{at}")
        };
        Error::Config(format!("{key}: {what}"))
    })
}

type BuildFn = Box<dyn FnOnce(&AppContext) -> Result<AppSpec, Error> + Send>;

/// A planned app: what builds it, its routes and its dashboard panel.
type Planned = (BuildFn, Option<AppRoutes>, Option<AppPanel>);

/// A kind with its settings type erased.
trait ErasedKind: Send + Sync {
    /// Read and check `settings` for app `name`; what builds it later.
    fn plan(
        &self,
        name: &str,
        settings: toml::Table,
        cluster: &ClusterInfo,
    ) -> Result<Planned, Error>;
}

struct Kind<K>(Arc<K>);

impl<K: AppKind> ErasedKind for Kind<K> {
    fn plan(
        &self,
        name: &str,
        settings: toml::Table,
        cluster: &ClusterInfo,
    ) -> Result<Planned, Error> {
        let settings: K::Settings = deserialize_at(settings, &format!("apps.{name}"))?;
        self.0
            .check(&settings, cluster)
            .map_err(|e| Error::Config(format!("apps.{name}.{e}")))?;
        let routes = self.0.routes(&settings);
        let panel = self.0.panel(&settings);
        let kind = self.0.clone();
        Ok((
            Box::new(move |ctx: &AppContext| kind.build(ctx, settings)),
            routes,
            panel,
        ))
    }
}

/// One app of a checked config, ready to start.
struct PlannedApp {
    name: String,
    overrides: PolicyOverrides,
    build: BuildFn,
    routes: Option<AppRoutes>,
    panel: Option<AppPanel>,
}

/// The apps a config asks for, checked and ready to start
/// ([`AppRegistry::plan`]).
pub struct AppsPlan {
    apps: Vec<PlannedApp>,
}

impl AppsPlan {
    /// The names of the apps that will start, in start order.
    pub fn names(&self) -> Vec<&str> {
        self.apps.iter().map(|a| a.name.as_str()).collect()
    }

    /// The HTTP routes of the planned apps, each under `/v1/<app name>/`,
    /// for [`crate::runtime::StartOptions::app_routes`].
    pub fn routes(&self) -> Result<AppRouteRegistry, Error> {
        let mut registry = AppRouteRegistry::new();
        for app in &self.apps {
            if let Some(r) = &app.routes {
                registry.mount(&app.name, r.clone())?;
            }
        }
        Ok(registry)
    }

    /// The dashboard panels of the planned apps, by app name, for
    /// [`crate::runtime::StartOptions::app_panels`].
    pub fn panels(&self) -> AppPanelRegistry {
        let mut registry = AppPanelRegistry::new();
        for app in &self.apps {
            if let Some(p) = &app.panel {
                registry.add(&app.name, p.clone());
            }
        }
        registry
    }

    /// Build and start every app on `node`, in order, with the node's
    /// configured `peers` and failure detector; stops at the first error.
    pub async fn start(
        self,
        node: &Node,
        peers: &[String],
        fd: Option<FailureDetectorHandle>,
    ) -> Result<Vec<App>, Error> {
        let mut started = Vec::new();
        for app in self.apps {
            let ctx = AppContext::new(node, app.name.clone())
                .with_peers(peers)
                .with_failure_detector(fd.clone());
            let mut spec = (app.build)(&ctx)?;
            // The config's name wins: it is what the operator looks for.
            spec.name = app.name.clone();
            spec.policy = app.overrides.apply(spec.policy);
            started.push(start_app(node, spec).await?);
        }
        Ok(started)
    }
}

/// App kinds by name, and the apps started by default.
#[derive(Clone, Default)]
pub struct AppRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
    defaults: Vec<String>,
}

/// The keys of an app table that are not its kind's settings.
const COMMON_KEYS: [&str; 3] = ["kind", "enabled", "supervision"];

impl AppRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) a kind.
    pub fn register<K: AppKind>(&mut self, kind: K) -> &mut Self {
        let name = kind.kind();
        self.kinds.insert(name, Arc::new(Kind(Arc::new(kind))));
        self
    }

    /// Start an app named `kind`, of that kind, with default settings,
    /// unless the config has an `[apps.<kind>]` table (which may turn it off
    /// with `enabled = false`).
    pub fn start_by_default(&mut self, kind: &str) -> &mut Self {
        if !self.defaults.iter().any(|d| d == kind) {
            self.defaults.push(kind.to_string());
        }
        self
    }

    /// The kinds started without a table of their own, in order.
    pub fn defaults(&self) -> Vec<&str> {
        self.defaults.iter().map(String::as_str).collect()
    }

    /// The names of the registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// Check the `[apps]` table of a node config and plan the apps to start:
    /// the default apps the table does not mention, then the table's apps
    /// (in the order of their names), leaving out those with `enabled = false`.
    pub fn plan(&self, apps: &toml::Table, cluster: &ClusterInfo) -> Result<AppsPlan, Error> {
        let mut planned = Vec::new();
        for name in self.defaults.iter().filter(|d| !apps.contains_key(*d)) {
            planned.push(self.plan_one(name, toml::Table::new(), cluster)?);
        }
        for (name, value) in apps {
            let toml::Value::Table(table) = value else {
                return Err(Error::Config(format!(
                    "apps.{name}: an app is a table [apps.{name}] with its kind's settings \
                     (`kind = \"...\"`, defaulting to the table's name), not a {}; \
                     to turn an app off, write `enabled = false` in its table",
                    value.type_str()
                )));
            };
            let mut table = table.clone();
            let enabled = match table.remove("enabled") {
                None => true,
                Some(toml::Value::Boolean(b)) => b,
                Some(other) => {
                    return Err(Error::Config(format!(
                        "apps.{name}.enabled: expected true or false, not a {}",
                        other.type_str()
                    )))
                }
            };
            let app = self.plan_one(name, table, cluster)?;
            if enabled {
                planned.push(app);
            }
        }
        Ok(AppsPlan { apps: planned })
    }

    fn known(&self) -> String {
        self.kinds().join(", ")
    }

    /// Check one app table (without `enabled`).
    fn plan_one(
        &self,
        name: &str,
        mut table: toml::Table,
        cluster: &ClusterInfo,
    ) -> Result<PlannedApp, Error> {
        troupe_framework::ids::validate_name(name)
            .map_err(|e| Error::Config(format!("apps.{name}: {e}")))?;
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                return Err(Error::Config(format!(
                    "apps.{name}.kind: expected the name of an app kind ({}), not a {}",
                    self.known(),
                    other.type_str()
                )))
            }
            None if self.kinds.contains_key(name) => name.to_string(),
            None => {
                return Err(Error::Config(format!(
                    "apps.{name}: no `kind = \"...\"`, and {name:?} is not an app kind \
                     (known kinds: {})",
                    self.known()
                )))
            }
        };
        let Some(erased) = self.kinds.get(kind.as_str()) else {
            return Err(Error::Config(format!(
                "apps.{name}.kind: unknown app kind {kind:?} (known kinds: {})",
                self.known()
            )));
        };
        let overrides = match table.remove("supervision") {
            None => PolicyOverrides::default(),
            Some(toml::Value::Table(t)) => {
                PolicyOverrides::from_table(t, &format!("apps.{name}.supervision"))?
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "apps.{name}.supervision: expected a table [apps.{name}.supervision], \
                     not a {}",
                    other.type_str()
                )))
            }
        };
        // The policy as the config leaves it; the kind's own default may
        // differ, and is checked again when the app starts.
        overrides
            .apply(AppSpec::default_policy())
            .validate(&format!("apps.{name}.supervision"))?;
        debug_assert!(COMMON_KEYS.iter().all(|k| !table.contains_key(*k)));
        let (build, routes, panel) = erased.plan(name, table, cluster)?;
        Ok(PlannedApp {
            name: name.to_string(),
            overrides,
            build,
            routes,
            panel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EchoSettings {
        word: String,
        #[serde(default)]
        members: Option<Vec<String>>,
        #[serde(default)]
        times: u32,
    }

    struct Echo;
    impl AppKind for Echo {
        type Settings = EchoSettings;
        fn kind(&self) -> &'static str {
            "echo"
        }
        fn check(&self, s: &EchoSettings, cluster: &ClusterInfo) -> Result<(), String> {
            check_members(s.members.as_deref().unwrap_or_default(), cluster)
        }
        fn build(&self, ctx: &AppContext, s: EchoSettings) -> Result<AppSpec, Error> {
            let _ = (s.word, s.times);
            Ok(AppSpec::new(ctx.name()))
        }
    }

    struct Quiet;
    impl AppKind for Quiet {
        type Settings = toml::Table;
        fn kind(&self) -> &'static str {
            "quiet"
        }
        fn build(&self, ctx: &AppContext, _: toml::Table) -> Result<AppSpec, Error> {
            Ok(AppSpec::new(ctx.name()))
        }
    }

    fn registry() -> AppRegistry {
        let mut r = AppRegistry::new();
        r.register(Echo).register(Quiet).start_by_default("quiet");
        r
    }

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            node: "node-a".into(),
            peers: vec!["node-b".into()],
        }
    }

    fn plan(text: &str) -> Result<AppsPlan, Error> {
        registry().plan(&text.parse::<toml::Table>().expect("toml"), &cluster())
    }

    fn error(text: &str) -> String {
        match plan(text) {
            Ok(p) => panic!("accepted {text:?}: {:?}", p.names()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn kinds_default_to_the_table_name_and_defaults_can_be_turned_off() {
        let p = plan("[echo]\nword = \"hi\"\n[loud]\nkind = \"echo\"\nword = \"HI\"").unwrap();
        assert_eq!(p.names(), vec!["quiet", "echo", "loud"]);
        let p = plan("[quiet]\nenabled = false\n[echo]\nword = \"hi\"\nenabled = true").unwrap();
        assert_eq!(p.names(), vec!["echo"]);
        assert_eq!(plan("").unwrap().names(), vec!["quiet"]);
    }

    #[test]
    fn bad_app_tables_are_refused_naming_the_key() {
        for (text, want) in [
            ("[echo]\nword = \"hi\"\nwrod = 1", "apps.echo.wrod: unknown field `wrod`"),
            ("[echo]\nword = 3", "apps.echo.word: invalid type: integer `3`"),
            ("[echo]\n", "apps.echo: missing field `word`"),
            ("[echo]\nword = \"x\"\ntimes = -1", "apps.echo.times: invalid value"),
            (
                "[echo]\nword = \"x\"\nmembers = [\"node-a\", \"node-z\"]",
                "apps.echo.members[1]: \"node-z\" is neither this node nor one of its [[peers]]",
            ),
            (
                "[echo]\nword = \"x\"\nmembers = [\"node-b\", \"node-b\"]",
                "apps.echo.members[1]: \"node-b\" is listed twice",
            ),
            (
                "[x]\nkind = \"gossip\"",
                "apps.x.kind: unknown app kind \"gossip\" (known kinds: echo, quiet)",
            ),
            ("[x]\n", "apps.x: no `kind = \"...\"`, and \"x\" is not an app kind (known kinds: echo, quiet)"),
            ("[x]\nkind = 3", "apps.x.kind: expected the name of an app kind"),
            ("echo = \"hi\"", "apps.echo: an app is a table [apps.echo]"),
            ("[\"a b\"]\nkind = \"quiet\"", "apps.a b: "),
            ("[quiet]\nenabled = \"no\"", "apps.quiet.enabled: expected true or false"),
            (
                "[quiet]\n[quiet.supervision]\nmax_restart = 1",
                "apps.quiet.supervision.max_restart: unknown field `max_restart`",
            ),
            (
                "[quiet]\n[quiet.supervision]\nstrategy = \"one-for-some\"",
                "apps.quiet.supervision.strategy: unknown variant `one-for-some`",
            ),
            (
                "[quiet]\n[quiet.supervision]\nbackoff_base = 5000",
                "apps.quiet.supervision.backoff_max must be >= apps.quiet.supervision.backoff_base",
            ),
            ("[quiet]\nsupervision = 1", "apps.quiet.supervision: expected a table"),
        ] {
            let err = error(text);
            assert!(err.contains(want), "for {text:?}: {err}\n  does not contain: {want}");
        }
    }

    #[test]
    fn overrides_replace_only_the_keys_given() {
        let o = PolicyOverrides::from_table(
            "strategy = \"rest-for-one\"\non_give_up = \"escalate\"\nwithin = 250"
                .parse()
                .unwrap(),
            "apps.x.supervision",
        )
        .unwrap();
        let p = o.apply(AppSpec::default_policy());
        assert_eq!(p.strategy, Strategy::RestForOne);
        assert_eq!(p.on_give_up, GiveUp::Escalate);
        assert_eq!(p.within, std::time::Duration::from_millis(250));
        assert_eq!(p.max_restarts, AppSpec::default_policy().max_restarts);
        assert_eq!(
            PolicyOverrides::default()
                .apply(AppSpec::default_policy())
                .on_give_up,
            GiveUp::Restart
        );
    }
}
