//! Completions and the manual page come from the clap definitions, cover
//! every subcommand, and every subcommand's `--help` shows an example.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cosell-sync"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COSELL_SYNC") || k == "RUST_LOG" || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

fn stdout_of(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` text lists under "Commands:" (without `help`).
fn subcommands_in(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path under the top level: `["status"]`, `["config", "show"]`…
fn command_paths() -> Vec<Vec<String>> {
    let mut todo: Vec<Vec<String>> = subcommands_in(&stdout_of(&["--help"]))
        .into_iter()
        .map(|n| vec![n])
        .collect();
    let mut all = Vec::new();
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        for child in subcommands_in(&stdout_of(&args)) {
            let mut p = path.clone();
            p.push(child);
            todo.push(p);
        }
        all.push(path);
    }
    all.sort();
    all
}

#[test]
fn the_help_lists_every_command_of_the_contract() {
    let top = subcommands_in(&stdout_of(&["--help"]));
    for name in [
        "run",
        "sync",
        "status",
        "referrals",
        "failures",
        "resync",
        "config",
        "login",
        "simulate",
        "demo",
        "bench",
        "completions",
        "manpage",
    ] {
        assert!(top.iter().any(|t| t == name), "{name} missing from {top:?}");
    }
}

#[test]
fn completions_for_every_shell_name_every_subcommand() {
    let paths = command_paths();
    assert!(paths.len() > 20, "{paths:?}");
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {script}");
        for path in &paths {
            let name = path.last().unwrap();
            assert!(
                script.contains(name.as_str()),
                "the {shell} completions do not mention {}",
                path.join(" ")
            );
        }
    }
    // An unknown shell is a usage error.
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_subcommand_help_has_an_example() {
    for path in command_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = stdout_of(&args);
        let example = help
            .split_once("Example:\n")
            .map(|(_, e)| e.trim())
            .unwrap_or_else(|| panic!("`{}` has no example:\n{help}", path.join(" ")));
        assert!(
            example.starts_with("cosell-sync "),
            "`{}`: the example is not a command line: {example}",
            path.join(" ")
        );
    }
}

#[test]
fn the_manual_page_is_roff_naming_every_top_level_command() {
    // No settings file needed: it works before anything is configured.
    let page = stdout_of(&["--config", "/nonexistent/cosell-sync.toml", "manpage"]);
    assert!(page.contains(".TH cosell-sync 1"), "{page}");
    for name in subcommands_in(&stdout_of(&["--help"])) {
        assert!(
            page.contains(&name.replace('-', "\\-")),
            "{name} missing from the manual page"
        );
    }
}
