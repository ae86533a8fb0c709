//! The `engram` command-line tool.
fn main() {
    println!("engram {}", env!("CARGO_PKG_VERSION"));
}
