//! The example configs shipped in `examples/configs/` stay valid.

use std::path::PathBuf;

use troupe::app::ClusterInfo;
use troupe::config::Config;

#[test]
fn shipped_example_configs_parse_and_validate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let c = Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(c.peers.len(), 2, "{}", path.display());
            let apps = troupe_apps::sample::registry()
                .plan(&c.apps, &ClusterInfo::of(&c))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(apps.names(), vec!["status", "counter", "election"]);
            c.quic_config("test".into()).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 3);
}
