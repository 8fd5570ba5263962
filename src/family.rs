//! Starting a protocol family on a node, and the handle every typed API is
//! built on.
//!
//! A family (see `troupe_protocols::family`) says how to build its core; this
//! module runs it: [`start`] puts one instance on a node — a supervised
//! [`Driver`] actor named after the instance, fed by the node's membership,
//! rebuilt from the node's durable store on every restart — and returns an
//! [`Instance`]. [`prepare`] does the same but hands back the actor spec, for
//! an application that places the protocol in its own supervision tree.
//! Either way the instance reports to the node's metrics (`GET /metrics`,
//! see [`crate::metrics`]): what [`Family::view_metrics`] reads from its
//! view at every scrape, and the counters [`Family::event_metric`] names,
//! each labelled `protocol="<actor name>"`.
//!
//! An [`Instance`] offers what every typed API needs:
//! - **commands** against the core ([`Instance::invoke`]), answered once
//!   everything the core wrote up to and including the command is durable;
//! - for a core that [`Settles`], **requests answered later**
//!   ([`Instance::settle`]): one command takes the request, and the answer
//!   comes when the core settles it (a Raft proposal once applied), with
//!   no polling and no wake-up of anyone else;
//! - the **view**, a projection of the core's state chosen by the family
//!   ([`Family::view`]), published only once the state it shows is durable:
//!   read it ([`Instance::view`]), watch it ([`Instance::watch`]) or wait for
//!   a predicate on it ([`Instance::wait_for`]). A view never lags: a waiter
//!   always sees the latest value, where an event stream can overflow;
//! - the **events** ([`Instance::subscribe`]), for those who want each one.
//!
//! `crate::lock` and `crate::leader` are built on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use troupe_framework::metrics::prometheus::IntCounter;
use troupe_framework::metrics::Sample;
use troupe_framework::sansio::Settles;
use troupe_framework::supervision::ActorSpec;
use troupe_framework::Node;
use troupe_protocols::driver::{
    spawn_driver, Awaited, Driver, DriverHandle, DriverSpec, OutputsOf,
};
use troupe_protocols::family::{EventMetric, Family};

use crate::Error;

/// A running instance of family `F` on one node. Cheap to clone.
pub struct Instance<F: Family> {
    driver: DriverHandle<F::Core>,
    view: watch::Receiver<F::View>,
}

impl<F: Family> Clone for Instance<F> {
    fn clone(&self) -> Self {
        Self {
            driver: self.driver.clone(),
            view: self.view.clone(),
        }
    }
}

/// The group of an instance: `members` plus this node, sorted, once each;
/// every name must be a valid node name.
fn group(node: &Node, members: &[String]) -> Result<Vec<String>, Error> {
    let mut all: Vec<String> = members.to_vec();
    all.push(node.name().to_string());
    for m in &all {
        troupe_framework::ids::validate_name(m)
            .map_err(|e| Error::Config(format!("member {m:?}: {e}")))?;
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// What [`prepare`] returns: the driver's actor spec and the instance's handle.
pub type Prepared<F> = (ActorSpec<Driver<<F as Family>::Core>>, Instance<F>);

/// The actor spec of instance `instance` of family `F` on `node` (to add to
/// any supervisor, e.g. an app's tree) and its handle. Every member must
/// prepare (or [`start`]) the instance with the same algorithm and members.
pub fn prepare<F: Family>(
    node: &Node,
    instance: &str,
    algorithm: F::Algorithm,
    members: &[String],
    config: F::Config,
) -> Result<Prepared<F>, Error> {
    let (spec, view) = spec::<F>(node, instance, algorithm, members, config)?;
    let (actor, driver) = spec.into_actor(node);
    Ok((actor, Instance { driver, view }))
}

/// Start instance `instance` of family `F` on `node`, supervised under the
/// node's root (see [`prepare`] for the arguments).
pub async fn start<F: Family>(
    node: &Node,
    instance: &str,
    algorithm: F::Algorithm,
    members: &[String],
    config: F::Config,
) -> Result<Instance<F>, Error> {
    let (spec, view) = spec::<F>(node, instance, algorithm, members, config)?;
    let driver = spawn_driver(node, spec).await?;
    Ok(Instance { driver, view })
}

type SpecAndView<F> = (
    DriverSpec<<F as Family>::Core>,
    watch::Receiver<<F as Family>::View>,
);

fn spec<F: Family>(
    node: &Node,
    instance: &str,
    algorithm: F::Algorithm,
    members: &[String],
    config: F::Config,
) -> Result<SpecAndView<F>, Error> {
    let name = F::actor_name(instance);
    troupe_framework::ids::validate_name(&name)
        .map_err(|e| Error::Config(format!("{algorithm} instance {instance:?}: {e}")))?;
    let all = group(node, members)?;
    let protocol = name.clone();
    let spec = DriverSpec::recovering(name, move |n: &Node, recovered| {
        F::build(
            algorithm,
            n.name().to_string(),
            all.clone(),
            &config,
            recovered,
        )
    })
    .membership()
    .hook(Arc::new(move || {
        let protocol = protocol.clone();
        // The event counters of this instance, made on first use.
        let mut counters: HashMap<EventMetric, Option<IntCounter>> = HashMap::new();
        Box::new(move |n: &Node, events: &[_]| {
            for e in events {
                if let Some(m) = F::event_metric(e) {
                    let counter = counters.entry(m).or_insert_with(|| {
                        let mut labels = vec![("protocol", protocol.as_str())];
                        labels.extend(m.label);
                        n.metrics().counter(m.name, m.help, &labels)
                    });
                    if let Some(c) = counter {
                        c.inc();
                    }
                }
            }
            if !n.tracing() {
                return;
            }
            for e in events {
                if let Some(t) = F::trace(&protocol, e) {
                    n.trace(t);
                }
            }
        })
    }));
    let (spec, view) = spec.view_unless(F::view, F::view_unchanged);
    // Read at every scrape, until the instance is gone for good (its spec,
    // which holds the view's sender, dropped).
    let rx = view.clone();
    let name = spec.name().to_string();
    node.metrics().set_source(
        name.clone(),
        Box::new(move |out: &mut Vec<Sample>| {
            if rx.has_changed().is_err() {
                return false;
            }
            let mut metrics = Vec::new();
            F::view_metrics(&rx.borrow(), &mut metrics);
            out.extend(metrics.into_iter().map(|m| Sample {
                name: m.name,
                help: m.help,
                kind: m.kind,
                labels: vec![("protocol", name.clone())],
                value: m.value,
            }));
            true
        }),
    );
    Ok((spec, view))
}

impl<F: Family> Instance<F> {
    /// The view as last published.
    pub fn view(&self) -> F::View {
        self.view.borrow().clone()
    }

    /// A receiver that sees every published view.
    pub fn watch(&self) -> watch::Receiver<F::View> {
        self.view.clone()
    }

    /// Wait until the view satisfies `ready`, at most `timeout`
    /// (`Duration::MAX`: no limit); returns that view.
    pub async fn wait_for(
        &self,
        ready: impl Fn(&F::View) -> bool,
        timeout: Duration,
    ) -> Result<F::View, Error> {
        let mut rx = self.view.clone();
        let wait = async {
            loop {
                {
                    let v = rx.borrow_and_update();
                    if ready(&v) {
                        return Ok(v.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Protocol(format!(
                        "protocol {:?} stopped",
                        self.driver.name()
                    )));
                }
            }
        };
        if timeout == Duration::MAX {
            return wait.await;
        }
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Run `f` against the core; answered once everything the core wrote up
    /// to and including this command is durable.
    pub async fn invoke<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut F::Core, Duration, &mut OutputsOf<F::Core>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        Ok(self.driver.invoke(f).await?)
    }

    /// A request answered once the core settles it: `start` takes it
    /// (returning the core's token) or refuses it at once (`Err`), `finish`
    /// turns the settlement into the answer (see
    /// [`DriverHandle::settle`]). One message to the driver, one wake-up.
    pub async fn settle<T: Send + 'static>(
        &self,
        start: impl FnOnce(
                &mut F::Core,
                Duration,
                &mut OutputsOf<F::Core>,
            ) -> Result<<F::Core as Settles>::Token, T>
            + Send
            + 'static,
        finish: impl FnOnce(&mut F::Core, <F::Core as Settles>::Token, <F::Core as Settles>::Settled) -> T
            + Send
            + 'static,
    ) -> Awaited<T>
    where
        F::Core: Settles,
        <F::Core as Settles>::Token: Send + 'static,
        <F::Core as Settles>::Settled: 'static,
    {
        self.driver.settle(start, finish).await
    }

    /// Run `f` against the core without waiting (for use in `Drop`).
    pub fn invoke_detached(
        &self,
        f: impl FnOnce(&mut F::Core, Duration, &mut OutputsOf<F::Core>) + Send + 'static,
    ) -> Result<(), Error> {
        Ok(self.driver.invoke_detached(f)?)
    }

    /// Every event the core emits from now on.
    pub fn subscribe(
        &self,
    ) -> broadcast::Receiver<<F::Core as troupe_framework::sansio::Protocol>::Event> {
        self.driver.subscribe()
    }

    /// The instance's actor name.
    pub fn name(&self) -> &str {
        self.driver.name()
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        self.driver.node()
    }
}
