//! Domain-incremental language modelling: a LoRA adapter on the frozen SmolLM2 base learns a
//! sequence of Debian `fortunes` categories one after another. Forgetting is the rise of the
//! held-out loss (log-perplexity) on earlier categories, and top-1 retention is the share of
//! the llama.cpp reference prompts whose greedy next token is still llama.cpp's.
//!
//! Experience replay here stores token ids in the same [`ReplayBuffer`] as the classifier
//! track (one row per example: the length, then the ids as exact small floats), and spends the
//! same compute as naive fine-tuning: each step trains on `batch` sequences, half of them
//! replayed once the buffer has any.

use std::path::Path;
use std::time::Instant;

use engram_kernels::replay::Policy;
use engram_runtime::burn::tensor::{Tensor, activation};
use engram_runtime::engine::Engine;
use engram_runtime::generate::Adaptation;
use engram_runtime::model::llama::{Llama, Logits, Proj};

use crate::datasets::DataError;
use engram_adapters::lora::{Lora, LoraConfig};
use engram_adapters::optim::{AdamW, AdamWConfig, causal_lm_loss};
use engram_adapters::trainer::{Batch, Encoded, Example, TrainConfig, Trainer};
use engram_learn::ReplayBuffer;

/// Prompt every fortune is a completion of.
pub const PROMPT: &str = "A fortune cookie says:\n";

/// Fortunes of one category file (entries separated by `%` lines), between 40 and 300 bytes.
pub fn load_fortunes(dir: &Path, category: &str) -> Result<Vec<String>, DataError> {
    let path = dir.join("fortunes").join(category);
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let out: Vec<String> = text
        .split("\n%\n")
        .map(|f| f.trim().to_owned())
        .filter(|f| (40..=300).contains(&f.len()))
        .collect();
    if out.len() < 10 {
        return Err(DataError::Format {
            path,
            what: format!("{} usable fortunes", out.len()),
        });
    }
    Ok(out)
}

/// Naive fine-tuning, experience replay or learning without forgetting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LmStrategy {
    /// Train on the current category only.
    Naive,
    /// Half of every batch replayed from a reservoir of earlier sequences.
    Er,
    /// LwF: the current batch only, plus [`LmConfig::distill`] times the distillation loss
    /// (temperature [`LWF_TEMPERATURE`]) towards the adapter as it was at the end of the
    /// previous category, on the completion positions. One extra forward pass per step.
    Lwf,
}

/// Distillation temperature of [`LmStrategy::Lwf`] (Li & Hoiem use 2).
pub const LWF_TEMPERATURE: f32 = 2.0;

/// Settings of the LM track.
#[derive(Clone, Debug)]
pub struct LmConfig {
    /// Categories in training order.
    pub categories: Vec<String>,
    /// Training fortunes per category.
    pub train_per_category: usize,
    /// Held-out fortunes per category.
    pub test_per_category: usize,
    /// Optimizer steps per category.
    pub steps_per_category: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Replay memory in sequences.
    pub buffer: usize,
    /// AdamW learning rate.
    pub lr: f32,
    /// Longest sequence in tokens.
    pub max_len: usize,
    /// LoRA rank.
    pub rank: usize,
    /// Weight of the distillation term of [`LmStrategy::Lwf`].
    pub distill: f32,
    /// Seed (LoRA init, shuffles, buffer).
    pub seed: u64,
}

/// Results of one LM-track run.
#[derive(Clone, Debug)]
pub struct LmResult {
    /// `nll[i][j]`: mean held-out loss (nats/token) on category `j` after training category `i`.
    pub nll: Vec<Vec<f32>>,
    /// Held-out loss of the base model (no adapter) per category.
    pub base_nll: Vec<f32>,
    /// Top-1 agreement with llama.cpp on the reference prompts after each category.
    pub top1: Vec<f32>,
    /// Top-1 agreement of the base model.
    pub base_top1: f32,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl LmResult {
    /// Average forgetting in nats/token: over categories `j < T-1`, the final held-out loss
    /// minus the lowest reached before the end.
    pub fn forgetting(&self) -> f32 {
        let t = self.nll.len();
        let f: Vec<f32> = (0..t - 1)
            .map(|j| {
                let best = (j..t - 1).map(|l| self.nll[l][j]).fold(f32::MAX, f32::min);
                self.nll[t - 1][j] - best
            })
            .collect();
        f.iter().sum::<f32>() / f.len().max(1) as f32
    }
}

fn top1_agreement(engine: &Engine, lora: Option<&Lora>, refs: &[(String, u32)]) -> f32 {
    let hits = refs
        .iter()
        .filter(|(prompt, want)| {
            let adaptation = lora.map_or(Adaptation::default(), |l| Adaptation::linear(l));
            let (_, logits) = engine
                .last_logits_with(prompt, adaptation)
                .expect("reference prompts fit the context");
            let top = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap_or(0);
            top as u32 == *want
        })
        .count();
    hits as f32 / refs.len().max(1) as f32
}

/// Runs the track with `strategy`; `refs` are (prompt, llama.cpp top-1 id) pairs.
pub fn run_lm(
    engine: &Engine,
    data_dir: &Path,
    cfg: &LmConfig,
    strategy: LmStrategy,
    refs: &[(String, u32)],
    mut log: impl FnMut(&str),
) -> Result<LmResult, DataError> {
    let start = Instant::now();
    let model = engine.model();
    let tok = engine.tokenizer();
    let trainer = Trainer::new(
        model,
        tok,
        TrainConfig {
            batch_size: cfg.batch,
            max_seq_len: cfg.max_len,
            seed: cfg.seed,
            ..TrainConfig::default()
        },
    );
    let mut train: Vec<Vec<Encoded>> = Vec::new();
    let mut test: Vec<Vec<Encoded>> = Vec::new();
    for c in &cfg.categories {
        let all = load_fortunes(data_dir, c)?;
        let ex: Vec<Example> = all
            .iter()
            .map(|f| Example::new(PROMPT, f.clone()))
            .collect();
        let enc = trainer.encode(&ex);
        let n_test = cfg.test_per_category.min(enc.len() / 2);
        // Deterministic split: every other fortune from the start is held out.
        let (mut tr, mut te) = (Vec::new(), Vec::new());
        for (i, e) in enc.into_iter().enumerate() {
            if i % 2 == 1 && te.len() < n_test {
                te.push(e);
            } else if tr.len() < cfg.train_per_category {
                tr.push(e);
            }
        }
        train.push(tr);
        test.push(te);
    }
    let eval = |lora: Option<&Lora>| -> Vec<f32> {
        test.iter()
            .map(|t| match lora {
                Some(l) => trainer.evaluate_encoded(l, t).loss,
                None => {
                    let fresh = Lora::new(model, lora_config(cfg)).expect("valid LoRA config");
                    trainer.evaluate_encoded(&fresh, t).loss
                }
            })
            .collect()
    };
    let base_nll = eval(None);
    let base_top1 = top1_agreement(engine, None, refs);
    let mut lora = Lora::new(model, lora_config(cfg)).expect("valid LoRA config");
    let mut opt = AdamW::new(AdamWConfig::default());
    let width = cfg.max_len + 1;
    let mut buffer = ReplayBuffer::new(cfg.buffer.max(1), width, 0, Policy::default(), cfg.seed)
        .expect("buffer size in range");
    let pad = tok.eos();
    let (mut nll, mut top1) = (Vec::new(), Vec::new());
    // LwF's teacher: the adapter as it was when the previous category ended.
    let mut teacher: Option<Lora> = None;
    for (k, data) in train.iter().enumerate() {
        if strategy == LmStrategy::Lwf && k > 0 {
            let mut t = Lora::new(model, lora_config(cfg)).expect("valid LoRA config");
            t.params_mut()
                .load_host(&lora.params().to_host())
                .expect("same configuration, same shapes");
            teacher = Some(t);
        }
        let mut cursor = (cfg.seed as usize).wrapping_mul(7919) % data.len();
        for step in 0..cfg.steps_per_category {
            let replayed = match strategy {
                LmStrategy::Er if !buffer.is_empty() => cfg.batch / 2,
                _ => 0,
            };
            let mut seqs: Vec<Encoded> = Vec::new();
            for _ in 0..cfg.batch - replayed {
                seqs.push(data[cursor % data.len()].clone());
                cursor += 1;
            }
            let fresh: Vec<Encoded> = seqs.clone();
            let b = buffer.sample(replayed);
            for row in b.x.chunks(width) {
                let n = row[0] as usize;
                let tokens: Vec<u32> = row[1..=n].iter().map(|&v| v as u32).collect();
                let n_prompt = tok.encode(PROMPT, true).len();
                seqs.push(Encoded { tokens, n_prompt });
            }
            let refs_b: Vec<&Encoded> = seqs.iter().collect();
            let batch = Batch::new(&refs_b, pad);
            let loss = match &teacher {
                Some(t) => {
                    let (ce, kd) = lwf_losses(model, &lora, t, &batch);
                    ce + kd * cfg.distill
                }
                None => trainer.batch_loss(&lora, &batch),
            };
            let value = loss.clone().into_scalar::<f32>();
            let grads = lora.params().grads(&loss.backward());
            opt.step(lora.params_mut(), &grads, cfg.lr);
            if strategy == LmStrategy::Er {
                for e in &fresh {
                    let mut row = vec![0.0f32; width];
                    row[0] = e.tokens.len() as f32;
                    for (d, &t) in row[1..].iter_mut().zip(&e.tokens) {
                        *d = t as f32;
                    }
                    buffer
                        .insert(&row, k as u32, k as u32, None)
                        .expect("row width fixed above");
                }
            }
            if step % 10 == 0 {
                log(&format!("  category {k} step {step}: loss {value:.3}"));
            }
        }
        let row = eval(Some(&lora));
        let agree = top1_agreement(engine, Some(&lora), refs);
        log(&format!(
            "after {}: held-out loss {:?}, top-1 agreement {:.2}",
            cfg.categories[k], row, agree
        ));
        nll.push(row);
        top1.push(agree);
    }
    Ok(LmResult {
        nll,
        base_nll,
        top1,
        base_top1,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Completion cross-entropy of `student` and the temperature-scaled distillation loss
/// `T² · KL(teacher ‖ student)` over the same positions, from one student and one teacher
/// forward pass.
fn lwf_losses(
    model: &Llama,
    student: &Lora,
    teacher: &Lora,
    batch: &Batch,
) -> (Tensor<1>, Tensor<1>) {
    let t = LWF_TEMPERATURE;
    let forward = |l: &Lora| {
        Adaptation::linear(l)
            .forward(model, &batch.inputs, batch.batch, None, Logits::All)
            .expect("max_len is checked against the context")
    };
    let s_logits = forward(student); // (b, t, vocab)
    let t_logits = forward(teacher).detach(); // (b, t, vocab)
    let (targets, mask) = batch.tensors(model.device()); // (b, t), (b, t)
    let ce = causal_lm_loss(s_logits.clone(), targets, mask.clone());
    let [b, n, _] = s_logits.dims();
    let log_s = activation::log_softmax(s_logits / t, 2);
    let log_t = activation::log_softmax(t_logits / t, 2);
    let kl = (log_t.clone().exp() * (log_t - log_s))
        .sum_dim(2)
        .reshape([b, n]); // (b, t)
    let kd = (kl * mask.clone()).sum() / mask.sum() * (t * t);
    (ce, kd)
}

fn lora_config(cfg: &LmConfig) -> LoraConfig {
    LoraConfig {
        rank: cfg.rank,
        alpha: 2.0 * cfg.rank as f32,
        targets: vec![Proj::Q, Proj::V, Proj::Down],
        seed: cfg.seed,
        ..LoraConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
    use engram_kernels::GgmlType;
    use engram_runtime::backend;
    use engram_runtime::cpu::CpuContext;
    use engram_runtime::model_file::ModelFile;

    use super::*;

    fn tiny() -> (tempfile::TempDir, Llama) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        std::fs::write(
            &path,
            tiny_llama_gguf(&TinyLlamaSpec::default(), GgmlType::Q8_0, 3),
        )
        .unwrap();
        let file = ModelFile::open(&path).unwrap();
        let cpu = Arc::new(CpuContext::new(1).unwrap());
        let model = Llama::load(&file, &backend::cpu().autodiff(), cpu).unwrap();
        (dir, model)
    }

    fn adapter(model: &Llama) -> Lora {
        Lora::new(
            model,
            LoraConfig {
                rank: 2,
                targets: vec![Proj::Q, Proj::V, Proj::Down],
                seed: 1,
                ..LoraConfig::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn lwf_distillation_is_zero_against_itself_and_positive_once_the_student_moves() {
        let (_dir, model) = tiny();
        let seqs = [
            Encoded {
                tokens: vec![1, 5, 9, 14, 3],
                n_prompt: 2,
            },
            Encoded {
                tokens: vec![1, 7, 2, 30],
                n_prompt: 2,
            },
        ];
        let batch = Batch::new(&seqs.iter().collect::<Vec<_>>(), 0);
        let teacher = adapter(&model);
        let mut student = adapter(&model);
        let (ce, kd) = lwf_losses(&model, &student, &teacher, &batch);
        assert!(ce.into_scalar::<f32>().is_finite());
        let same = kd.into_scalar::<f32>();
        assert!(same.abs() < 1e-5, "KD of a model against itself: {same}");
        // Move every B of the student (B = 0 at init, so the adapters were identical).
        for id in student.params().ids().collect::<Vec<_>>() {
            if student.params().name(id).ends_with("lora_b") {
                let v = student.params().value(id);
                let moved = v.clone().ones_like() * 0.5 + v;
                student.params_mut().set_value(id, moved);
            }
        }
        let (_, kd) = lwf_losses(&model, &student, &teacher, &batch);
        let grads = student.params().grads(&kd.clone().backward());
        let moved = kd.into_scalar::<f32>();
        assert!(moved > 1e-4, "KD after the student moved: {moved}");
        assert!(
            grads.norm() > 0.0,
            "the distillation term reaches the student"
        );
    }

    #[test]
    fn forgetting_is_the_rise_over_the_best_earlier_loss() {
        let r = LmResult {
            nll: vec![
                vec![2.0, 4.0, 4.0],
                vec![1.5, 3.0, 4.0],
                vec![2.5, 3.5, 2.0],
            ],
            base_nll: vec![4.0; 3],
            top1: vec![1.0; 3],
            base_top1: 1.0,
            seconds: 0.0,
        };
        // Category 0: 2.5 - 1.5; category 1: 3.5 - 3.0; the last category does not count.
        assert!((r.forgetting() - 0.75).abs() < 1e-6, "{}", r.forgetting());
    }
}
