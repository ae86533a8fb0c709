//! Stored state under bad input: a rejected edit, example or adapter leaves it byte for byte as
//! it was; a second writer is refused; a killed writer's temp files go at the next open; an edit
//! log that does not fit the model is refused.

use super::*;
/// Every file under `root` (or `root` itself), path → bytes.
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if root.is_file() {
        out.insert(root.to_path_buf(), std::fs::read(root).unwrap());
        return out;
    }
    for entry in std::fs::read_dir(root).unwrap() {
        let p = entry.unwrap().path();
        out.extend(contents(&p));
    }
    out
}

/// Runs engram with `args` (and `stdin`), returning (success, stderr).
fn run(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(args)
        .arg("-q")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let _ = pipe.write_all(stdin.unwrap_or("").as_bytes());
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.status.code().is_some(), "{args:?}: {}", out.status);
    (out.status.success(), stderr)
}

#[test]
fn rejected_edits_examples_and_adapters_leave_stored_state_byte_identical() {
    let f = fixtures();
    let d = f.dir.path();
    let m = s(&f.model);
    let state = d.join("edit-state");
    let log = d.join("edits.log");
    let good_facts = write(d, "facts/good.jsonl", format!("{FACT}\n"));
    let (ok, err) = run(
        &[
            "edit",
            "--model",
            &m,
            "--facts",
            &s(&good_facts),
            "--method",
            "gated",
        ]
        .into_iter()
        .chain(["--generate", "0", "--log", &s(&log)])
        .collect::<Vec<_>>(),
        None,
    );
    assert!(ok, "{err}");
    // The second line of each file is bad: nothing of the first may be applied either.
    let half_bad_facts = write(
        d,
        "facts/half-bad.jsonl",
        format!("{FACT}\n{}\n", FACT.replace("\"Zork's home is\"", "\"\"")),
    );
    let half_bad_examples = write(
        d,
        "data/half-bad.jsonl",
        format!("{EXAMPLE}\n{{\"prompt\": \"a\", \"completion\": 3}}\n"),
    );
    let bad_config = write(d, "configs/bad.json", r#"{"rome_layer": 99}"#);
    let stdin_half_bad = format!("{EXAMPLE}\n{{\"text\": \"\"}}\n");
    let before_state = contents(&state);
    let before_log = contents(&log);
    let before_adapter = contents(&f.peft);
    let (fs, fl, fa) = (s(&half_bad_facts), s(&half_bad_examples), s(&f.peft));
    let (st, lg, bc) = (s(&state), s(&log), s(&bad_config));
    let ok_data = s(&write(d, "data/ok.jsonl", format!("{EXAMPLE}\n")));
    let rejected: Vec<(Vec<&str>, Option<&str>)> = vec![
        (
            vec!["edit", "--model", &m, "--facts", &fs, "--state", &st],
            None,
        ),
        (
            vec![
                "edit",
                "--model",
                &m,
                "--facts",
                &fs,
                "--method",
                "gated",
                "--generate",
                "0",
                "--log",
                &lg,
            ],
            None,
        ),
        (
            vec![
                "edit",
                "--model",
                &m,
                "--facts",
                &fs,
                "--method",
                "rome",
                "--config",
                &bc,
                "--generate",
                "0",
                "--log",
                &lg,
            ],
            None,
        ),
        (
            vec!["learn", "--model", &m, "--state", &st, "--data", &fl],
            None,
        ),
        (
            vec!["learn", "--model", &m, "--state", &st, "--data", "-"],
            Some(stdin_half_bad.as_str()),
        ),
        (
            vec![
                "learn", "--model", &m, "--state", &st, "--data", &fl, "--rank", "3",
            ],
            None,
        ),
        (
            vec![
                "train",
                "--model",
                &m,
                "--data",
                &fl,
                "--out",
                &fa,
                "--seq-len",
                "32",
                "--epochs",
                "1",
            ],
            None,
        ),
        (
            vec![
                "train",
                "--model",
                &m,
                "--data",
                &ok_data,
                "--out",
                &fa,
                "--seq-len",
                "32",
                "--rank",
                "0",
            ],
            None,
        ),
    ];
    for (args, stdin) in &rejected {
        let (ok, _) = run(args, *stdin);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            contents(&state) == before_state,
            "{args:?} changed the state"
        );
        assert!(
            contents(&log) == before_log,
            "{args:?} changed the edit log"
        );
        assert!(
            contents(&f.peft) == before_adapter,
            "{args:?} changed the adapter"
        );
    }
    // The stored state still serves: what was there is not lost.
    let (ok, err) = run(&["state", &st, "--model", &m, "--verify"], None);
    assert!(ok, "{err}");
}

#[test]
fn a_second_writer_is_refused_and_stale_temp_files_do_not_outlive_the_next_open() {
    let f = fixtures();
    let d = f.dir.path();
    let m = s(&f.model);
    let log = d.join("edits.log");
    let facts = s(&write(d, "facts/good.jsonl", format!("{FACT}\n")));
    let edit = |log: &Path| {
        run(
            &[
                "edit", "--model", &m, "--facts", &facts, "--method", "gated",
            ]
            .into_iter()
            .chain(["--generate", "0", "--log", &s(log)])
            .collect::<Vec<_>>(),
            None,
        )
    };
    // A killed writer's temp file beside the log goes at the next open.
    let stale = d.join(".edits.log.engram-tmp-killed");
    std::fs::write(&stale, b"torn").unwrap();
    let (ok, err) = edit(&log);
    assert!(ok, "{err}");
    assert!(
        !stale.exists(),
        "the stale temp file outlived the next open"
    );
    // While another writer holds the log, a second one is refused, naming the lock.
    let held = engram::runtime::io::WriterLock::beside(&log).unwrap();
    let before = std::fs::read(&log).unwrap();
    let (ok, err) = edit(&log);
    assert!(!ok && err.contains("another engram writer"), "{err}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        before,
        "the refused writer wrote"
    );
    drop(held);
    // Same for a learning state.
    let state = d.join("edit-state");
    let held = engram::runtime::io::WriterLock::in_dir(&state).unwrap();
    let data = s(&write(d, "data/one.jsonl", format!("{EXAMPLE}\n")));
    let (ok, err) = run(
        &[
            "learn",
            "--model",
            &m,
            "--state",
            &s(&state),
            "--data",
            &data,
        ],
        None,
    );
    assert!(!ok && err.contains("another engram writer"), "{err}");
    drop(held);
}

#[test]
fn an_edit_log_whose_vectors_do_not_fit_the_model_is_refused() {
    use engram::edit::log;
    use engram::edit::store::EditDelta;
    let f = fixtures();
    let d = f.dir.path();
    let m = s(&f.model);
    let path = d.join("edits.log");
    let facts = s(&write(d, "facts/good.jsonl", format!("{FACT}\n")));
    let edit = |method: &str| {
        run(
            &["edit", "--model", &m, "--facts", &facts, "--method", method]
                .into_iter()
                .chain(["--generate", "0", "--log", &s(&path)])
                .collect::<Vec<_>>(),
            None,
        )
    };
    let (ok, err) = edit("gated");
    assert!(ok, "{err}");
    let bytes = std::fs::read(&path).unwrap();
    let contents = log::decode(&bytes, &path).unwrap();
    type Craft = fn(&mut EditDelta);
    let crafted: [(&str, Craft); 3] = [
        ("values", |delta| {
            if let EditDelta::Gate(g) = delta {
                g.value.truncate(3);
            }
        }),
        ("blocks", |delta| {
            if let EditDelta::Gate(g) = delta {
                g.relation_layer = 999;
            }
        }),
        // JSON has no NaN: serde writes null, which the payload parser refuses.
        ("damaged", |delta| {
            if let EditDelta::Gate(g) = delta {
                g.relation_key[0] = f32::NAN;
            }
        }),
    ];
    for (says, craft) in crafted {
        let mut c = contents.clone();
        craft(&mut c.edits[0].delta);
        std::fs::write(&path, log::encode(&c)).unwrap();
        let (ok, err) = edit("gated");
        assert!(!ok, "{says}: accepted");
        assert!(
            err.contains("edits.log") && err.contains(says),
            "{says}: {err}"
        );
    }
}
