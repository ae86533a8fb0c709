//! Streams the Split-Digits tasks (or Split-Fashion-MNIST with `fashion`) through experience
//! replay, printing the class-incremental accuracy matrix as it grows. After task 2 it
//! checkpoints, drops the learner as a crash would, rebuilds it from the checkpoint and shows
//! that the replay buffer came back byte for byte before finishing the stream.
//!
//! ```sh
//! scripts/fetch_cl_data.sh digits          # once (fashion: `scripts/fetch_cl_data.sh fashion`)
//! cargo run --release --example continual [digits|fashion]
//! ```

use engram::backend;
use engram::harness::datasets as data;
use engram::learn::data::Stream;
use engram::learn::persist;
use engram::learn::protocol::{self, Mode, RunConfig, StrategyKind};
use engram::learn::{checkpoint, learner::Learner};

fn print_row(task: usize, l: &Learner, stream: &Stream) {
    let cells: Vec<String> = stream
        .tasks
        .iter()
        .map(|t| format!("{:5.1}", 100.0 * l.accuracy(&t.test, None)))
        .collect();
    let trained: Vec<&str> = (0..stream.tasks.len())
        .map(|j| if j <= task { "" } else { "·" })
        .collect();
    println!(
        "after task {task}: {}   {}",
        cells.join(" "),
        trained.join("")
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "digits".into());
    let dir = data::data_dir()?;
    let stream = match which.as_str() {
        "fashion" => data::split_fashion_mnist(&dir)?,
        _ => data::split_digits(&dir)?,
    };
    let cfg = RunConfig {
        strategy: StrategyKind::Er,
        hidden: vec![100, 100],
        mode: Mode::Online,
        buffer: 200,
        seed: 0,
        hp: protocol::committed_hparams()
            .remove("er")
            .unwrap_or_default(),
    };
    let device = backend::cpu().autodiff();
    let ckpt = std::env::temp_dir().join(format!("engram-continual-{}", std::process::id()));
    println!(
        "{}: {} tasks of 2 classes, ER with a {}-example reservoir; class-IL accuracy per task (%)",
        stream.name,
        stream.tasks.len(),
        cfg.buffer
    );
    let mut learner = protocol::build_learner(&cfg, stream.dim, stream.n_classes, &device);
    let restart_after = 2;
    let mut task = 0;
    while task < stream.tasks.len() {
        let t = &stream.tasks[task];
        learner.train_task(task as u32, &t.train, &t.classes);
        print_row(task, &learner, &stream);
        if task == restart_after {
            checkpoint::save(&learner, &ckpt)?;
            let before = persist::to_bytes(learner.buffer.as_ref().expect("ER has a buffer"));
            drop(learner);
            println!(
                "-- restart: learner dropped, rebuilt from {} --",
                ckpt.display()
            );
            learner = protocol::build_learner(&cfg, stream.dim, stream.n_classes, &device);
            checkpoint::restore(&mut learner, &ckpt)?;
            let after = persist::to_bytes(learner.buffer.as_ref().expect("ER has a buffer"));
            let buf = learner.buffer.as_ref().expect("ER has a buffer");
            println!(
                "   buffer: {} of {} slots, {} items seen, snapshot {} bytes, identical after restart: {}",
                buf.len(),
                buf.capacity(),
                buf.state().seen,
                after.len(),
                before == after
            );
            if before != after {
                return Err("the restored buffer differs".into());
            }
            print_row(task, &learner, &stream);
        }
        task += 1;
    }
    let _ = std::fs::remove_dir_all(&ckpt);
    Ok(())
}
