//! The live dashboard in a real browser: a three-node `troupe cluster`
//! running the kv, lock, election, bank and chat apps, node-1's page at `/` open in
//! headless Chromium (driven over the DevTools protocol), node-3 SIGKILLed,
//! and node-3 seen turning `Down` in node-1's row of the membership table
//! without the page being reloaded. Also checked on the page: every node's
//! column, the kv app's panel from each node, the election's leader, the
//! lock, the bank's and the chat's panels, the supervision trees and live
//! traffic arrows. The same cluster is
//! then shown by `troupe dashboard --node URL --node URL` (the page served
//! from the operator's side), which keeps updating when the first node it
//! reads from is killed.
//!
//! Screenshots go to `target/dashboard/` for people to look at (the
//! README's picture, docs/img/dashboard.png, is `dashboard-down.png`).
//! Without Chromium the test says `SKIPPED: chromium not installed` and
//! passes.

use std::io::Write;
use std::time::Duration;

use troupe_apps::cluster::{read_file, ClusterFile};

#[path = "common/browser.rs"]
#[allow(dead_code)]
mod browser;
#[path = "troupe_run/mod.rs"]
mod troupe_run;

use browser::Chromium;

fn http_of(file: &ClusterFile, name: &str) -> String {
    file.nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.http.clone())
        .expect(name)
}

/// The status node `observer`'s row shows for `member`.
fn cell(observer: &str, member: &str) -> String {
    format!(
        "(document.querySelector('td[data-observer=\"{observer}\"][data-member=\"{member}\"]') || {{dataset: {{}}}}).dataset.status"
    )
}

#[test]
fn the_dashboard_shows_a_killed_node_going_down_without_a_reload() {
    let Some(chromium) = Chromium::or_skip("dashboard_browser") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("troupe-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let _cleanup = troupe_run::KillNodesOnDrop(dir.clone());
    troupe_run::troupe_ok(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--apps",
        "kv,lock,election,bank,chat",
        "--dir",
        d,
    ]);
    let file = read_file(&dir).expect("cluster file");
    let url = format!("{}/?every_ms=300", http_of(&file, "node-1"));
    let shots = browser::target_dir().join("dashboard");
    let mut page = chromium.open(&url, (1400, 1250)).expect("browser opens");

    // Everything is there once the cluster settled.
    let up = |o: &str, m: &str| format!("{} === 'Up'", cell(o, m));
    let settled = [
        "Number(document.body.dataset.updates) >= 3".to_string(),
        up("node-1", "node-3"),
        up("node-2", "node-3"),
        up("node-3", "node-1"),
        "document.querySelectorAll('.panel[data-app=\"kv\"]').length === 3".to_string(),
        // Every bundled app's panel, built (no error) on every node.
        "['bank', 'chat'].every(a => document.querySelectorAll(`.panel[data-app=\"${a}\"] dl`).length === 3)".to_string(),
        // The kv panel of a node shows the replica's leader once elected.
        "[...document.querySelectorAll('.panel[data-app=\"kv\"] dd')].some(d => d.textContent.startsWith('node-'))".to_string(),
        "document.querySelectorAll('tr[data-election]').length >= 3".to_string(),
        "document.querySelectorAll('tr[data-lock]').length === 3".to_string(),
        "document.querySelectorAll('[data-tree]').length === 3".to_string(),
        "Number(document.body.dataset.arrows) > 0".to_string(),
    ];
    page.wait_for(&settled.join(" && "), Duration::from_secs(60))
        .unwrap_or_else(|e| {
            let _ = page.screenshot(&shots.join("dashboard-unsettled.png"));
            panic!("the dashboard did not show the settled cluster: {e}")
        });
    page.screenshot(&shots.join("dashboard-up.png"))
        .expect("screenshot");
    let load_id = page.eval("document.body.dataset.loadId").expect("load id");
    let updates = page
        .eval("Number(document.body.dataset.updates)")
        .expect("updates")
        .as_f64()
        .unwrap_or(0.0);

    troupe_run::troupe_ok(&["cluster", "kill", "--dir", d, "node-3"]);
    page.wait_for(
        &format!(
            "{} === 'Down' && {} === 'Down'",
            cell("node-1", "node-3"),
            cell("node-2", "node-3")
        ),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| {
        let _ = page.screenshot(&shots.join("dashboard-not-down.png"));
        panic!("node-3 was not shown Down: {e}")
    });
    // node-3's own row: no snapshot from a dead node.
    let own = page.eval(&cell("node-3", "node-1")).expect("row");
    assert_eq!(own, "unreachable", "node-3's row after its death");
    assert_eq!(
        page.eval("document.body.dataset.loadId").expect("load id"),
        load_id,
        "the page was reloaded"
    );
    let later = page
        .eval("Number(document.body.dataset.updates)")
        .expect("updates")
        .as_f64()
        .unwrap_or(0.0);
    assert!(later > updates, "no update pushed after the kill");
    page.screenshot(&shots.join("dashboard-down.png"))
        .expect("screenshot");
    drop(page);

    // The same picture from `troupe dashboard`, reading node-2 then node-1:
    // it goes on when node-2 is killed.
    let mut proxy = troupe_run::spawn_troupe(&[
        "dashboard",
        "--node",
        &http_of(&file, "node-2"),
        "--node",
        &http_of(&file, "node-1"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut line = String::new();
    let stdout = proxy.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("troupe dashboard prints its URL");
    let proxy_url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let run = (|| {
        let mut page = chromium.open(&format!("{proxy_url}?every_ms=300"), (1400, 1000))?;
        page.wait_for(
            &format!(
                "Number(document.body.dataset.updates) >= 2 && {} === 'Down' && document.getElementById('where').textContent.includes('gathered by node-2')",
                cell("node-2", "node-3")
            ),
            Duration::from_secs(30),
        )?;
        troupe_run::troupe_ok(&["cluster", "kill", "--dir", d, "node-2"]);
        page.wait_for(
            &format!(
                "document.getElementById('where').textContent.includes('gathered by node-1') && {} === 'Down'",
                cell("node-1", "node-2")
            ),
            Duration::from_secs(60),
        )?;
        page.screenshot(&shots.join("dashboard-proxy.png"))
    })();
    let _ = proxy.kill();
    let _ = proxy.wait();
    run.expect("troupe dashboard");
    let _ = writeln!(
        std::io::stderr(),
        "dashboard screenshots: {}",
        shots.display()
    );
    troupe_run::troupe_ok(&["cluster", "down", "--dir", d, "--clean"]);
}
