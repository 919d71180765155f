//! Every command's `--help` ends with examples of its use.

use assert_cmd::Command;

fn help(args: &[&str]) -> String {
    let out = Command::cargo_bin("appschema-cli")
        .unwrap()
        .args(args)
        .arg("--help")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` lists under `Commands:` (without `help`).
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_help_ends_with_examples_of_that_command() {
    let top = help(&[]);
    assert!(top.contains("Examples:\n  appschema-cli "), "{top}");
    let mut pending: Vec<Vec<String>> = commands(&top).into_iter().map(|c| vec![c]).collect();
    assert!(pending.len() >= 10, "{top}");
    let mut checked = 0;
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        let example = format!("\n  appschema-cli {}", args.join(" "));
        let examples = text
            .split_once("Examples:")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("`{}` --help has no examples:\n{text}", args.join(" ")));
        assert!(
            examples
                .lines()
                .any(|line| format!("\n{line}").starts_with(&example)),
            "`{}` --help's examples do not run it:\n{text}",
            args.join(" ")
        );
        for sub in commands(&text) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
        checked += 1;
    }
    assert!(checked >= 12, "checked {checked}");
}

/// Every list of commands (`--help` of the tool and of each command with
/// subcommands) gives one short line per command, clap's `about` (the doc
/// comment's first paragraph); the detail is in `help COMMAND` only.
#[test]
fn command_lists_give_one_short_line_each() {
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    let mut listed = 0;
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        let list: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "Commands:")
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .collect();
        for line in &list {
            assert!(
                line.chars().count() <= 100,
                "`{}` --help lists a command with more than one short line \
                 (make the doc comment's first paragraph one sentence):\n{line}",
                args.join(" ")
            );
        }
        listed += list.len();
        for sub in commands(&text) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
    }
    assert!(listed >= 12, "listed {listed}");
    // The detail is still there, in the command's own help.
    let migrate = help(&["migrate"]);
    assert!(migrate.contains("timeline order"), "{migrate}");
}
