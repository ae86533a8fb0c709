//! Seeded mutations of valid files through the decoders the fuzz targets run (docs/FUZZING.md),
//! so the stable toolchain and CI check the same property deterministically: a mutated LoRA
//! GGUF, PEFT config, edit log, statistics payload or replay snapshot gives `Ok` or an error,
//! never a panic, and what passes still fits the model.

use engram::adapters::lora::gguf_layout::{ProjShapes, lora_gguf_layout, lora_tensor_values};
use engram::adapters::lora::peft_config::parse_peft_config;
use engram::adapters::lora::{Lora, LoraConfig};
use engram::edit::log;
use engram::edit::record::LogContents;
use engram::edit::stats_cache::{self, StatsKey};
use engram::harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, tiny_llama_gguf_with_bytes};
use engram::kernels::GgmlType;
use engram::learn::{Policy, ReplayBuffer, Retention, Sampling, persist};
use engram::runtime::format::Gguf;
use engram::runtime::io::envelope;
use engram::runtime::model::llama::Proj;
use engram::{Engine, backend};

/// xorshift64*: a fixed stream of mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that tend to hit edge cases when written over a length, count or offset field.
const INTERESTING: [u64; 8] = [0, 1, 2, 64, 65, u32::MAX as u64, 1 << 40, u64::MAX];

/// Mutations per decoder.
const MUTATIONS: usize = 2000;

/// `base` with one to four random edits (bit flips, bytes, 8-byte edge values, cuts, inserts).
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            2 if bytes.len() >= 8 => {
                let i = rng.below(bytes.len() - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            3 => bytes.truncate(rng.below(bytes.len() + 1)),
            _ => {
                let i = rng.below(bytes.len() + 1);
                bytes.insert(i, rng.next() as u8);
            }
        }
    }
    bytes
}

/// Runs `decode` on `MUTATIONS` mutations of `base`; returns how many it accepted.
fn accepted(base: &[u8], seed: u64, decode: impl Fn(&[u8]) -> bool) -> usize {
    assert!(decode(base), "the unmutated input decodes");
    let mut rng = Rng(seed);
    (0..MUTATIONS)
        .filter(|_| decode(&mutate(base, &mut rng)))
        .count()
}

fn tiny_shapes() -> ProjShapes {
    ProjShapes {
        n_layer: 2,
        projections: vec![
            ("attn_q", 64, 64),
            ("attn_k", 64, 32),
            ("attn_v", 64, 32),
            ("attn_output", 64, 64),
            ("ffn_gate", 64, 96),
            ("ffn_up", 64, 96),
            ("ffn_down", 96, 64),
        ],
    }
}

#[test]
fn mutated_files_never_panic_their_decoders() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        d_model: 64,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        d_ff: 96,
        n_ctx: 64,
    };
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, tiny_llama_gguf_with_bytes(&spec, GgmlType::Q8_0, 7)).unwrap();
    let engine = Engine::load(&model, &backend::cpu(), 1).unwrap();
    let config = LoraConfig {
        rank: 2,
        targets: vec![Proj::Q, Proj::V],
        ..LoraConfig::default()
    };
    let lora = Lora::new(engine.model(), config).unwrap();
    let adapter = dir.path().join("adapter");
    lora.save_adapter_dir(engine.model(), &adapter, "tiny")
        .unwrap();

    let gguf = std::fs::read(adapter.join("adapter.gguf")).unwrap();
    let shapes = tiny_shapes();
    let n = accepted(&gguf, 1, |b| {
        let Ok(g) = Gguf::parse(b) else { return false };
        let Ok(layout) = lora_gguf_layout(&g, b.len(), &shapes) else {
            return false;
        };
        assert!(layout.rank <= 64 && layout.layers.end <= 2 && layout.alpha.is_finite());
        layout.layers.clone().all(|l| {
            layout.targets.iter().all(|p| {
                ["a", "b"].iter().all(|ab| {
                    lora_tensor_values(&g, b, &format!("blk.{l}.{p}.weight.lora_{ab}")).is_ok()
                })
            })
        })
    });
    assert!(n < MUTATIONS, "LoRA GGUF: every mutation accepted");

    let peft = std::fs::read(adapter.join("adapter_config.json")).unwrap();
    let n = accepted(&peft, 2, |b| match parse_peft_config(b, 2) {
        Ok(c) => {
            assert!((1..=65536).contains(&c.rank) && c.alpha.is_finite());
            assert!(c.layers.is_none_or(|l| l.end <= 2));
            true
        }
        Err(_) => false,
    });
    assert!(n < MUTATIONS, "PEFT config: every mutation accepted");

    let fact = r#"{"subject":"Zork","prompt":"Zork lives in","target_new":" Paris","rephrase_prompts":["Zork's home is"],"locality_prompts":["Bob lives in"]}"#;
    let facts = dir.path().join("facts.jsonl");
    std::fs::write(&facts, format!("{fact}\n")).unwrap();
    let log = dir.path().join("edits.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engram"))
        .args([
            "edit",
            "-q",
            "--method",
            "gated",
            "--generate",
            "0",
            "--model",
        ])
        .arg(&model)
        .arg("--facts")
        .arg(&facts)
        .arg("--log")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&log).unwrap();
    let (_, payload) = envelope::open(&bytes, log::MAGIC, log::READS).unwrap();
    let n = accepted(payload, 3, |b| match LogContents::decode(b) {
        Ok(c) => c.edits.iter().all(|e| e.check_shape(2, 64, 96).is_ok()),
        Err(_) => false,
    });
    assert!(n < MUTATIONS, "edit log: every mutation accepted");

    let key = StatsKey {
        model: "tiny".into(),
        corpus: 0,
        max_tokens: 0,
        layer: 0,
    };
    let header = serde_json::to_vec(&(&key, 4usize, 100usize)).unwrap();
    let mut stats = (header.len() as u32).to_le_bytes().to_vec();
    stats.extend(&header);
    stats.extend((0..16).flat_map(|i| (i as f32).to_le_bytes()));
    let n = accepted(&stats, 4, |b| {
        stats_cache::decode(b, &key).is_some_and(|s| s.mom2.len() == s.dim * s.dim)
    });
    assert!(n < MUTATIONS, "statistics cache: every mutation accepted");

    let policy = Policy {
        retention: Retention::ClassBalanced,
        sampling: Sampling::PowerLawRecency { alpha: 0.7 },
    };
    let mut buf = ReplayBuffer::new(4, 3, 2, policy, 9).unwrap();
    for i in 0..10u32 {
        let row = [i as f32, 1.0, 0.5];
        let _ = buf
            .insert(&row, i % 3, i / 5, Some(&[1.0, i as f32]))
            .unwrap();
    }
    // The payload is mutated and sealed again: past the CRC, into the field decoder.
    let snapshot = persist::to_bytes(&buf);
    let (_, payload) = envelope::open(&snapshot, persist::MAGIC, &[persist::VERSION]).unwrap();
    let n = accepted(payload, 5, |b| {
        let sealed = envelope::seal(persist::MAGIC, persist::VERSION, b);
        persist::from_bytes(&sealed).is_ok_and(|r| r.len() <= r.capacity())
    });
    assert!(n < MUTATIONS, "replay snapshot: every mutation accepted");
}
