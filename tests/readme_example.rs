//! The README's examples are the compiled ones, word for word: "Apps as
//! supervised trees" is `examples/app_tree.rs`, "Atomic commit" is
//! `examples/commit_orders.rs` (the test suite compiles and runs both).

#[test]
fn the_readme_app_example_is_the_compiled_one() {
    same(
        "## Apps as supervised trees",
        "app_tree.rs",
        "apps as supervised trees",
    );
}

#[test]
fn the_readme_commit_example_is_the_compiled_one() {
    same("## Atomic commit", "commit_orders.rs", "atomic commit");
}

#[test]
fn the_readme_discovery_example_is_the_compiled_one() {
    same(
        "## Discovery, pub/sub and death-watch",
        "discovery.rs",
        "discovery",
    );
}

#[test]
fn the_readme_cluster_features_example_is_the_compiled_one() {
    same(
        "## Remote spawn and cluster singleton",
        "cluster_features.rs",
        "cluster features",
    );
}

/// The first rust block under `heading` is `example`'s part between its
/// `// README: <marker> (begin)` and `(end)` lines.
fn same(heading: &str, example: &str, marker: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example = std::fs::read_to_string(format!("{root}/examples/{example}")).expect(example);
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README section {heading:?}"));
    let shown = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a rust block in the section");
    let compiled = example
        .split(&format!("// README: {marker} (begin)\n"))
        .nth(1)
        .and_then(|s| s.split(&format!("// README: {marker} (end)")).next())
        .expect("README markers in the example");
    assert_eq!(
        shown.trim(),
        compiled.trim(),
        "README.md and the example differ: copy the example's marked part into the README"
    );
}
