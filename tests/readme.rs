//! The README's and the book's instructions stay true: the one `apt-get
//! install` line (the book's *Contributing* chapter) names exactly the
//! packages `scripts/install-deps.sh` installs (and `.ci/run` installs them
//! through that script), the README's quickstart and the book's axum snippets
//! are the examples that compile (the quickstart also runs), and the README's
//! `[dependencies]` blocks match the workspace.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The package names of every `apt-get install` in the book's *Contributing*
/// chapter (the README points there), per line.
fn readme_apt_get_lines() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(root().join("docs/src/contributing.md")).unwrap();
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
        "docs/src/contributing.md must have exactly one `apt-get install` line, naming the \
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

/// The rust block (```` ```rust ```` with any attributes) after `marker` in
/// `file` (the README or a chapter of the book).
fn readme_block_after(file: &str, marker: &str) -> String {
    let readme = std::fs::read_to_string(root().join(file)).unwrap();
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("{file} has no `{marker}`"))..];
    after
        .split_once("```rust")
        .and_then(|(_, rest)| rest.split_once('\n'))
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
    let block = readme_block_after("docs/src/routing.md", "<!-- examples/axum_app.rs");
    let body = example_body("examples/axum_app.rs");
    assert_eq!(
        block.trim_end(),
        body.trim_end(),
        "docs/src/routing.md's axum snippet must equal examples/axum_app.rs (below its doc comment)"
    );
}

#[test]
fn readme_async_snippet_is_the_compiled_example() {
    let block = readme_block_after("docs/src/async.md", "<!-- examples/axum_async_app.rs");
    let body = example_body("examples/axum_async_app.rs");
    assert_eq!(
        block.trim_end(),
        body.trim_end(),
        "docs/src/async.md's async snippet must equal examples/axum_async_app.rs (below its doc comment)"
    );
}

#[test]
fn readme_quickstart_is_the_compiled_example() {
    let block = readme_block_after("README.md", "<!-- examples/readme_quickstart.rs");
    let body = example_body("examples/readme_quickstart.rs");
    assert_eq!(
        block.trim_end(),
        body.trim_end(),
        "README.md's quickstart must equal examples/readme_quickstart.rs (below its doc comment)"
    );
}

/// The quickstart's program, run against a throwaway database.
#[allow(dead_code)] // its `main` is the example's entry point, unused here
#[path = "../examples/readme_quickstart.rs"]
mod quickstart;

#[test]
fn readme_quickstart_runs() {
    let db = appschema_tempdb::TestDb::new();
    quickstart::run(db.url()).unwrap();
}

/// The README's two `[dependencies]` blocks (*Add it to your application*),
/// parsed: the blocking path's, then the async path's.
fn readme_dependency_blocks() -> Vec<toml::Table> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Add it to your application")
        .expect("README.md has the section *Add it to your application*")..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```toml\n")
        .skip(1)
        .map(|rest| {
            let block = rest.split_once("```\n").expect("a closed toml block").0;
            block
                .parse::<toml::Table>()
                .unwrap_or_else(|e| panic!("{e}\n{block}"))
        })
        .collect()
}

fn table(value: &toml::Value) -> &toml::Table {
    value.as_table().expect("a table")
}

/// A dependency's version requirement, whether written `"1"` or `{ version = "1" }`.
fn version(dep: &toml::Value) -> &str {
    match dep {
        toml::Value::String(v) => v,
        other => table(other)["version"].as_str().expect("a version"),
    }
}

fn features(dep: &toml::Value) -> Vec<&str> {
    dep.get("features")
        .and_then(toml::Value::as_array)
        .map(|f| f.iter().map(|f| f.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// Each block names the versions the workspace builds with (diesel 2.4,
/// diesel-async 0.10, axum, tokio, serde), the facade's own version, only
/// features the facade has, the async feature and diesel-async exactly on
/// the async path, and every feature the workspace compiles its examples
/// with for tokio, serde and diesel's `postgres` (plus `r2d2`, which the
/// registry's pool needs).
#[test]
fn readme_dependency_blocks_match_the_workspace() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let workspace = table(&table(&manifest["workspace"])["dependencies"]);
    let facade_version = table(&manifest["package"])["version"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            table(&table(&manifest["workspace"])["package"])["version"]
                .as_str()
                .unwrap()
                .to_string()
        });
    let facade_features = table(&manifest["features"]);
    let blocks = readme_dependency_blocks();
    assert_eq!(
        blocks.len(),
        2,
        "a block for the blocking path and one for the async path"
    );
    for (i, block) in blocks.iter().enumerate() {
        let is_async = i == 1;
        let deps = table(&block["dependencies"]);
        let appschema = &deps["appschema"];
        assert!(
            facade_version.starts_with(&format!("{}.", version(appschema))),
            "appschema {} in README.md, the facade is {facade_version}",
            version(appschema)
        );
        for feature in features(appschema) {
            assert!(
                facade_features.contains_key(feature),
                "no feature `{feature}`"
            );
        }
        assert_eq!(
            features(appschema).contains(&"async"),
            is_async,
            "block {i}"
        );
        assert_eq!(deps.contains_key("diesel-async"), is_async, "block {i}");
        for (name, dep) in deps {
            if name == "appschema" {
                continue;
            }
            let ours = workspace
                .get(name)
                .unwrap_or_else(|| panic!("README.md names `{name}`, the workspace does not"));
            assert_eq!(
                version(dep),
                version(ours),
                "`{name}` in README.md block {i}"
            );
            let needed: &[&str] = match name.as_str() {
                "diesel" => &["postgres", "r2d2"],
                "diesel-async" => &["postgres"],
                _ => &[],
            };
            for feature in features(ours)
                .into_iter()
                .filter(|_| matches!(name.as_str(), "tokio" | "serde"))
                .chain(needed.iter().copied())
            {
                assert!(
                    features(dep).contains(&feature),
                    "`{name}` in README.md block {i} lacks feature `{feature}`"
                );
            }
        }
    }
}

/// The lines of `text` outside fenced code blocks, numbered, with inline code
/// removed (a link inside backticks is not a link).
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut fence: Option<String> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks: String = trimmed.chars().take_while(|&c| c == '`').collect();
        if ticks.len() >= 3 {
            match &fence {
                None => {
                    fence = Some(ticks);
                    continue;
                }
                Some(open) if ticks.starts_with(open.as_str()) => {
                    fence = None;
                    continue;
                }
                Some(_) => {}
            }
        }
        if fence.is_none() {
            let mut prose = String::new();
            for (j, part) in line.split('`').enumerate() {
                if j % 2 == 0 {
                    prose.push_str(part);
                }
            }
            lines.push((i + 1, prose));
        }
    }
    lines
}

/// A heading's anchor as GitHub and mdBook derive it: links reduced to their
/// text, lower case, punctuation other than `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](url)` -> `text`
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .split_once("](")
            .and_then(|(t, r)| Some((t, r.split_once(')')?.1)))
        {
            Some((t, r)) => {
                text.push_str(t);
                rest = r;
            }
            None => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the headings of a markdown file (duplicates suffixed
/// `-1`, `-2`, … as GitHub and mdBook do).
fn heading_anchors(text: &str) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut anchors = std::collections::HashSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of the `[text](target)` links of a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let end = after.find([')', ' ']).unwrap_or(after.len());
        targets.push(after[..end].to_string());
        rest = &after[end..];
    }
    targets
}

/// Every relative link in README.md, BENCHMARKS.md and the book's chapters
/// names a file that exists and, for `file#anchor` or `#anchor`, a heading of
/// that file (external links are not fetched). `.ci/run` builds the book
/// with `mdbook build docs`; this is its link check.
#[test]
fn relative_links_resolve() {
    let mut files = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    let mut chapters: Vec<_> = std::fs::read_dir(root().join("docs/src"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    assert!(chapters.len() > 10, "docs/src has the book's chapters");
    files.extend(chapters);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in prose_lines(&text) {
            for target in link_targets(&line) {
                let scheme = target.split_once(':').map(|(s, _)| s);
                if scheme.is_some_and(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                }) {
                    continue; // external
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let at = format!(
                    "{}:{number}: {target}",
                    file.strip_prefix(root()).unwrap().display()
                );
                if !dest.exists() {
                    broken.push(format!("{at}: no such file"));
                } else if !anchor.is_empty()
                    && dest.extension().is_some_and(|e| e == "md")
                    && !heading_anchors(&std::fs::read_to_string(&dest).unwrap()).contains(anchor)
                {
                    broken.push(format!("{at}: no heading #{anchor} there"));
                }
            }
        }
    }
    assert!(checked > 20, "found the links ({checked})");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
