//! The README's "Apps as supervised trees" example is the one in
//! `examples/app_tree.rs` (which the test suite compiles), word for word.

#[test]
fn the_readme_app_example_is_the_compiled_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(format!("{root}/examples/app_tree.rs")).expect("app_tree.rs");
    let section = readme
        .split("## Apps as supervised trees")
        .nth(1)
        .expect("README section \"Apps as supervised trees\"");
    let shown = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a rust block in the section");
    let compiled = example
        .split("// README: apps as supervised trees (begin)\n")
        .nth(1)
        .and_then(|s| s.split("// README: apps as supervised trees (end)").next())
        .expect("README markers in examples/app_tree.rs");
    assert_eq!(
        shown.trim(),
        compiled.trim(),
        "README.md and examples/app_tree.rs differ: copy the example's marked part into the README"
    );
}
