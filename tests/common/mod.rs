//! Helpers the facade's integration tests share: each test file that runs the CLI declares
//! `mod common;`.

// Each test crate uses a subset.
#![allow(dead_code)]

use std::process::{Command, Output};

/// The `engram` binary this package builds.
pub fn engram() -> Command {
    Command::new(env!("CARGO_BIN_EXE_engram"))
}

/// `out`'s stdout, after checking that the command succeeded (its stdout and stderr in the
/// failure).
pub fn ok_stdout(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
