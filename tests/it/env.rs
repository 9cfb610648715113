//! Every flag of every command has its `PIRATEBAY_*` variable, named after
//! the flag and shown in `--help`, and the binary honours it; or it is one
//! of the flags of a single invocation that README lists as having none.
//! The flags are read from `--help`, so a new flag fails here until it is
//! given a variable (and a check below) or listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use piratebay_sync::Sha1Digest;

use crate::support::*;

const COMMANDS: [&str; 5] = ["serve", "list", "files", "get", "index"];

/// Flags of one invocation, without a variable (README says so).
const NO_VARIABLE: [&str; 6] = [
    "--search", "--all", "--output", "--force", "--json", "--help",
];

/// Each option of `piratebay-sync <command> --help` and the variable its
/// description names (`env PIRATEBAY_...`), if any.
fn help_flags(command: &str) -> BTreeMap<String, Option<String>> {
    let out = cli(&[command, "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout_text(&out);
    let options = text.split("Options:").nth(1).expect("an Options: section");
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |entry: Option<(String, String)>| {
        if let Some((flag, desc)) = entry {
            let var = desc
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .split("env ")
                .nth(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect::<String>()
                });
            flags.insert(flag, var);
        }
    };
    for line in options.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent == 2 && trimmed.starts_with('-') {
            finish(current.take());
            let (names, desc) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
            let long = names
                .split(", ")
                .find(|n| n.starts_with("--"))
                .unwrap_or(names)
                .to_string();
            current = Some((long, desc.to_string()));
        } else if let Some((_, desc)) = current.as_mut() {
            desc.push(' ');
            desc.push_str(trimmed);
        }
    }
    finish(current.take());
    flags
}

/// `--etcd-ca` -> `PIRATEBAY_ETCD_CA`.
fn variable_of(flag: &str) -> String {
    format!(
        "PIRATEBAY_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    )
}

/// Runs the binary with `env` and without any inherited `PIRATEBAY_*`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    for (k, _) in std::env::vars() {
        if k.starts_with("PIRATEBAY_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    run_with_timeout(&mut cmd, DEFAULT_TIMEOUT)
}

#[track_caller]
fn assert_fails_saying(out: &Output, says: &str, what: &str) {
    let text = stderr_text(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {text}");
    assert!(text.contains(says), "{what}: expected {says:?} in {text}");
}

#[test]
fn every_flag_has_its_variable_or_is_listed_as_having_none() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for command in COMMANDS {
        for (flag, var) in help_flags(command) {
            match var {
                Some(var) => {
                    assert_eq!(var, variable_of(&flag), "{command} {flag}");
                    assert!(readme.contains(&var), "README does not mention {var}");
                }
                None => assert!(
                    NO_VARIABLE.contains(&flag.as_str()),
                    "{command} {flag} has no PIRATEBAY_* variable: give it one or list it"
                ),
            }
        }
    }
    for flag in NO_VARIABLE.iter().filter(|f| **f != "--help") {
        assert!(
            readme.contains(&format!("`{flag}`")),
            "README does not list {flag} among the flags without a variable"
        );
    }
}

/// Each variable, for each command that has it, changes what the command
/// does: mostly a bad value the command refuses, naming it (no etcd needed).
#[test]
fn every_variable_is_honoured_by_every_command_that_has_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    // A file, so that `index` has a change to save in its cache.
    std::fs::write(ds.join("f"), b"indexed").unwrap();
    let ds = ds.to_str().unwrap();
    let st = tmp.path().join("st");
    let st = st.to_str().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port([127, 0, 0, 1]));
    let missing_ca = "/nonexistent/pbs-env-ca.pem";
    let (a, b) = (Sha1Digest::of(b"a").to_hex(), Sha1Digest::of(b"b").to_hex());
    let base = |command: &str| -> Vec<String> {
        let v: Vec<&str> = match command {
            // Never a peer that runs: every check makes it stop at start.
            "serve" => vec![
                "serve",
                "--dataset",
                ds,
                "--state-dir",
                st,
                "--listen",
                "127.0.0.1:0",
            ],
            "files" => vec!["files", "--state-dir", st],
            "get" => vec!["get", &a, "--state-dir", st],
            "index" => vec!["index", "--dataset", ds, "--state-dir", st],
            other => vec![other],
        };
        v.into_iter().map(String::from).collect()
    };
    let mut checked = BTreeSet::new();
    for command in COMMANDS {
        for (flag, var) in help_flags(command) {
            let Some(var) = var else { continue };
            let what = format!("{command} with {var}");
            let mut args = base(command);
            let drop_flag = |args: &mut Vec<String>, flag: &str| {
                if let Some(i) = args.iter().position(|a| a == flag) {
                    args.drain(i..i + 2);
                }
            };
            match var.as_str() {
                "PIRATEBAY_DATASET" => {
                    drop_flag(&mut args, "--dataset");
                    let out = run(&as_refs(&args), &[(&var, "/nonexistent/pbs-env-ds")]);
                    assert_fails_saying(&out, "/nonexistent/pbs-env-ds", &what);
                }
                "PIRATEBAY_ETCD" => {
                    let out = run(&as_refs(&args), &[(&var, ",")]);
                    assert_fails_saying(&out, "PIRATEBAY_ETCD is empty", &what);
                }
                "PIRATEBAY_ETCD_USER" => {
                    let out = run(&as_refs(&args), &[(&var, "u")]);
                    assert_fails_saying(&out, "PIRATEBAY_ETCD_USER needs --etcd-password", &what);
                }
                "PIRATEBAY_ETCD_PASSWORD" => {
                    // With the password from the variable the user is
                    // accepted; the command then fails further on.
                    args.extend(["--etcd-user".into(), "u".into()]);
                    let later = if command == "serve" {
                        drop_flag(&mut args, "--dataset");
                        args.extend(["--dataset".into(), "/nonexistent/pbs-env-ds2".into()]);
                        "/nonexistent/pbs-env-ds2".to_string()
                    } else {
                        args.extend(["--etcd".into(), dead.clone()]);
                        dead.clone()
                    };
                    let out = run(&as_refs(&args), &[(&var, "p")]);
                    assert_fails_saying(&out, &later, &what);
                    assert!(!stderr_text(&out).contains("needs"), "{what}");
                }
                "PIRATEBAY_ETCD_CA" => {
                    let out = run(&as_refs(&args), &[(&var, missing_ca)]);
                    assert_fails_saying(&out, missing_ca, &what);
                }
                "PIRATEBAY_LISTEN" => {
                    drop_flag(&mut args, "--listen");
                    let out = run(&as_refs(&args), &[(&var, "nowhere-env")]);
                    assert_fails_saying(&out, "PIRATEBAY_LISTEN \"nowhere-env\"", &what);
                }
                "PIRATEBAY_ADVERTISE" => {
                    let out = run(&as_refs(&args), &[(&var, "0.0.0.0:7070")]);
                    assert_fails_saying(&out, "PIRATEBAY_ADVERTISE \"0.0.0.0:7070\"", &what);
                }
                "PIRATEBAY_TTL"
                | "PIRATEBAY_PIECE_SIZE"
                | "PIRATEBAY_WORKERS"
                | "PIRATEBAY_UPLOAD_SLOTS"
                | "PIRATEBAY_RESCAN" => {
                    let out = run(&as_refs(&args), &[(&var, "lots")]);
                    assert_fails_saying(&out, &format!("invalid {var}"), &what);
                }
                "PIRATEBAY_JOBS" => {
                    // A batch reads it: two SHA1s.
                    args.push(b.clone());
                    let out = run(&as_refs(&args), &[(&var, "lots")]);
                    assert_fails_saying(&out, &format!("invalid {var}"), &what);
                }
                "PIRATEBAY_MAX_RATE" => {
                    let out = run(&as_refs(&args), &[(&var, "zz-rate")]);
                    assert_fails_saying(
                        &out,
                        "PIRATEBAY_MAX_RATE: invalid rate \"zz-rate\"",
                        &what,
                    );
                }
                "PIRATEBAY_STATE_DIR" if command == "index" => {
                    drop_flag(&mut args, "--state-dir");
                    let env_st = tmp.path().join("index-state");
                    let out = run(&as_refs(&args), &[(&var, env_st.to_str().unwrap())]);
                    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr_text(&out));
                    assert!(has_file_starting(&env_st, "index-"), "{what}: no cache");
                }
                "PIRATEBAY_STATE_DIR" if command == "serve" => {
                    // The peer id is written before the etcd client is
                    // built; a missing CA file then stops the peer.
                    drop_flag(&mut args, "--state-dir");
                    let env_st = tmp.path().join("serve-state");
                    let out = run(
                        &as_refs(&args),
                        &[
                            (&var, env_st.to_str().unwrap()),
                            ("PIRATEBAY_ETCD_CA", missing_ca),
                        ],
                    );
                    assert_fails_saying(&out, missing_ca, &what);
                    assert!(env_st.join("peer-id").is_file(), "{what}: no peer id");
                }
                // Need an etcd and a peer: checked by
                // `variables_reach_etcd_and_the_catalog`.
                "PIRATEBAY_NAMESPACE" | "PIRATEBAY_STATE_DIR" | "PIRATEBAY_DIR" => {}
                other => panic!("{command} {flag}: no check for {other}: add one"),
            }
            checked.insert((command, var));
        }
    }
    assert!(checked.len() >= 25, "{checked:?}");
}

fn as_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn has_file_starting(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    })
}

/// The variables that need a network: `PIRATEBAY_ETCD` and
/// `PIRATEBAY_NAMESPACE` for every command, `PIRATEBAY_STATE_DIR` of
/// `files` and `get` (a batch: one file reads no catalog), `PIRATEBAY_DIR`
/// of `get`, with no flag given.
#[test]
fn variables_reach_etcd_and_the_catalog() {
    let etcd = EtcdServer::new();
    let ep = etcd.endpoint();
    let ns = "pbs-env-ns";
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("env.txt"), b"from the environment").unwrap();
    let sha1 = Sha1Digest::of(b"from the environment").to_hex();
    let peer = Serve::new(&ep)
        .env("PIRATEBAY_NAMESPACE", ns)
        .dataset(data.path())
        .start();
    let id = peer.id();
    let tmp = tempfile::tempdir().unwrap();
    let env_of = |state: &Path| -> Vec<(String, String)> {
        vec![
            ("PIRATEBAY_ETCD".into(), ep.clone()),
            ("PIRATEBAY_NAMESPACE".into(), ns.into()),
            ("PIRATEBAY_STATE_DIR".into(), state.display().to_string()),
        ]
    };
    let run_env = |args: &[&str], env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(args, &env)
    };

    let listed = wait_for(Duration::from_secs(10), "the peer listed", || {
        let out = run_env(&["list"], &env_of(tmp.path()));
        stdout_text(&out).contains(&id).then_some(out)
    });
    assert_eq!(listed.status.code(), Some(0));

    let files_state = tmp.path().join("files-state");
    let out = wait_for(Duration::from_secs(20), "the file in `files`", || {
        let out = run_env(&["files"], &env_of(&files_state));
        stdout_text(&out).contains(&sha1).then_some(out)
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert!(files_state.join("catalog-cache.bin").is_file());

    let get_state = tmp.path().join("get-state");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut env = env_of(&get_state);
    env.push(("PIRATEBAY_DIR".into(), out_dir.display().to_string()));
    let out = run_env(&["get", &sha1], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(
        std::fs::read(out_dir.join("env.txt")).unwrap(),
        b"from the environment"
    );

    // A batch reads the catalog, cached in the state directory.
    let all_dir = tmp.path().join("all");
    std::fs::create_dir_all(&all_dir).unwrap();
    let mut env = env_of(&get_state);
    env.push(("PIRATEBAY_DIR".into(), all_dir.display().to_string()));
    let out = run_env(&["get", "--all"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert!(all_dir.join("env.txt").is_file());
    assert!(get_state.join("catalog-cache.bin").is_file());
}
