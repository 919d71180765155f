//! The README's instructions stay true: its one `apt-get install` line names
//! exactly the packages `scripts/install-deps.sh` installs (and `.ci/run`
//! installs them through that script), and its axum snippet is the example
//! that compiles.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The package names of every `apt-get install` in the README, per line.
fn readme_apt_get_lines() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("apt-get install")?;
            let rest = rest.split(['#', '&', ';', '`']).next().unwrap_or("");
            Some(
                rest.split_whitespace()
                    .filter(|word| !word.starts_with('-'))
                    .map(str::to_string)
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn readme_apt_get_line_names_exactly_what_install_deps_installs() {
    let out = Command::new("sh")
        .arg(root().join("scripts/install-deps.sh"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let script: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!script.is_empty());
    let lines = readme_apt_get_lines();
    assert_eq!(
        lines,
        vec![script],
        "README.md must have exactly one `apt-get install` line, naming the \
         packages of scripts/install-deps.sh in the same order"
    );
}

#[test]
fn ci_installs_the_system_packages_through_install_deps() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines()
            .any(|line| line.trim_start().starts_with("scripts/install-deps.sh")),
        ".ci/run must run scripts/install-deps.sh"
    );
    assert!(
        !ci.lines()
            .any(|line| !line.trim_start().starts_with('#') && line.contains("apt-get install")),
        ".ci/run must not install packages of its own"
    );
}

/// The README's rust block after `marker`.
fn readme_block_after(marker: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no `{marker}`"))..];
    after
        .split_once("```rust\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(code, _)| code.to_string())
        .expect("a rust code block after the marker")
}

/// `path` without its leading doc comment.
fn example_body(path: &str) -> String {
    let example = std::fs::read_to_string(root().join(path)).unwrap();
    example
        .lines()
        .skip_while(|line| line.starts_with("//!"))
        .skip_while(|line| line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readme_axum_snippet_is_the_compiled_example() {
    let block = readme_block_after("<!-- examples/axum_app.rs");
    let body = example_body("examples/axum_app.rs");
    assert_eq!(
        block.trim_end(),
        body.trim_end(),
        "README.md's axum snippet must equal examples/axum_app.rs (below its doc comment)"
    );
}

#[test]
fn readme_async_snippet_is_the_compiled_example() {
    let block = readme_block_after("<!-- examples/axum_async_app.rs");
    let body = example_body("examples/axum_async_app.rs");
    assert_eq!(
        block.trim_end(),
        body.trim_end(),
        "README.md's async snippet must equal examples/axum_async_app.rs (below its doc comment)"
    );
}
