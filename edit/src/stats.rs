//! Second-moment statistics `C = E[k kᵀ]` of the MLP keys (down-projection inputs) over a
//! bounded text corpus: the "what else this layer stores" that ROME and MEMIT protect, and
//! whose null space AlphaEdit projects onto.
//!
//! One pass over at most `max_tokens` tokens collects every requested layer at once; time and
//! memory are bounded by that budget (`d_ff²` floats per layer, one batch of activations).
//! Results are cached per layer in a versioned file keyed by model, corpus and budget.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use engram_runtime::burn;
use engram_runtime::io::WriterLock;
use engram_runtime::io::envelope::{self, EnvelopeError};
use engram_runtime::model::llama::Llama;
use engram_runtime::model::tokenizer::Tokenizer;
use engram_runtime::progress::Progress;
use serde::Serialize;

use super::probe::{Batch, capture_keys};

pub use crate::stats_cache::{LayerStats, MAGIC, StatsKey, VERSION};

/// Tokens per corpus row (the covariance is over all positions of every row).
pub const ROW_TOKENS: usize = 128;
/// Rows per forward pass.
pub const ROWS_PER_PASS: usize = 4;

/// How a statistics pass went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatsReport {
    /// Tokens run through the model.
    pub tokens: usize,
    /// Wall time of the pass (0 when everything came from the cache).
    pub seconds: f64,
    /// Layers loaded from the cache.
    pub cached_layers: Vec<usize>,
    /// Bytes of statistics held (all layers).
    pub bytes: usize,
    /// Wall time of what the editor derives from them once (`C⁻¹`, null-space projectors).
    pub prepare_seconds: f64,
}

/// Statistics files could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// The corpus has too little text.
    #[error("corpus gives {0} tokens; at least {ROW_TOKENS} are needed")]
    CorpusTooSmall(usize),
    /// The cache directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing a cache file failed (the error names it).
    #[error(transparent)]
    Write(#[from] EnvelopeError),
}

fn cache_path(dir: &Path, key: &StatsKey) -> PathBuf {
    let tag = fnv1a64(serde_json::to_string(key).expect("key").as_bytes());
    dir.join(format!("kcov-L{}-{tag:016x}.bin", key.layer))
}

/// Writes `s` to `path` in the envelope: a `u32` header length, the JSON header (key, `d_ff`,
/// tokens), then `E[k kᵀ]` as little-endian f32, streamed (the matrix is ~9 MB per layer).
fn write_cache(path: &Path, key: &StatsKey, s: &LayerStats) -> Result<(), EnvelopeError> {
    let header = serde_json::to_vec(&(key, s.dim, s.tokens)).expect("header");
    let len = 4 + header.len() as u64 + 4 * s.mom2.len() as u64;
    envelope::write_file_with(path, MAGIC, VERSION, len, |w| {
        w.write_all(&(header.len() as u32).to_le_bytes())?;
        w.write_all(&header)?;
        for v in &s.mom2 {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
}

/// Reads a cache file; `None` when absent, of another version, damaged or for another key
/// (a cache: any doubt means compute again).
fn read_cache(path: &Path, key: &StatsKey) -> Option<LayerStats> {
    let sealed = envelope::read_file(path, MAGIC, &[VERSION]).ok()?;
    crate::stats_cache::decode(sealed.payload(), key)
}

/// 64-bit FNV-1a: names a cache file after what it was computed from.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What key statistics are computed from, and where they are cached.
#[derive(Clone, Copy, Debug)]
pub struct StatsSource<'a> {
    /// Base model identity (part of the cache key).
    pub model_id: &'a str,
    /// The text run through the model.
    pub corpus: &'a str,
    /// At most this many of its tokens are used.
    pub max_tokens: usize,
    /// Where per-layer results are cached.
    pub cache_dir: &'a Path,
}

/// `E[k kᵀ]` at each of `layers` over the first `max_tokens` tokens of the source's corpus, from
/// its cache where present (computed and stored otherwise). `progress` is told of the pass over
/// the corpus (one unit per batch of rows) when one runs.
pub fn layer_stats(
    model: &Llama,
    tok: &Tokenizer,
    source: &StatsSource,
    layers: &[usize],
    progress: &dyn Progress,
) -> Result<(Vec<LayerStats>, StatsReport), StatsError> {
    let StatsSource {
        model_id,
        corpus,
        max_tokens,
        cache_dir,
    } = *source;
    let key = |layer| StatsKey {
        model: model_id.to_string(),
        corpus: fnv1a64(corpus.as_bytes()),
        max_tokens,
        layer,
    };
    let mut report = StatsReport::default();
    let mut have = Vec::new();
    let mut missing = Vec::new();
    for &l in layers {
        let path = cache_path(cache_dir, &key(l));
        match read_cache(&path, &key(l)) {
            // A cache of another shape (a crafted or foreign file under our name) is computed
            // again rather than trusted: its matrix would index past the model's keys.
            Some(s) if s.dim != model.config().d_ff => {
                tracing::warn!(
                    "{}: statistics of dimension {}, the model's keys have {}; computing again",
                    path.display(),
                    s.dim,
                    model.config().d_ff
                );
                missing.push(l);
            }
            Some(s) => {
                report.cached_layers.push(l);
                have.push(s);
            }
            None => missing.push(l),
        }
    }
    if !missing.is_empty() {
        let start = Instant::now();
        let computed = collect(model, tok, corpus, max_tokens, &missing, progress)?;
        report.seconds = start.elapsed().as_secs_f64();
        report.tokens = computed.first().map_or(0, |s| s.tokens);
        std::fs::create_dir_all(cache_dir).map_err(|source| StatsError::Io {
            path: cache_dir.to_path_buf(),
            source,
        })?;
        for s in computed {
            let path = cache_path(cache_dir, &key(s.layer));
            // Writers of one cache file take its lock and clear what a killed writer left; if
            // another process is writing the same statistics, its file will do.
            match WriterLock::for_replace(&path) {
                Ok(_lock) => write_cache(&path, &key(s.layer), &s)?,
                Err(e) => tracing::debug!("{e}; not writing the cache"),
            }
            have.push(s);
        }
    }
    have.sort_by_key(|s| layers.iter().position(|&l| l == s.layer));
    report.bytes = have.iter().map(|s| s.mom2.len() * 4).sum();
    Ok((have, report))
}

/// One pass over the corpus collecting `Σ k kᵀ` on the model's device.
fn collect(
    model: &Llama,
    tok: &Tokenizer,
    corpus: &str,
    max_tokens: usize,
    layers: &[usize],
    progress: &dyn Progress,
) -> Result<Vec<LayerStats>, StatsError> {
    let mut ids = tok.encode(corpus, false);
    ids.truncate(max_tokens);
    // Rows never longer than the model's context (small models have less than ROW_TOKENS).
    let row_len = ROW_TOKENS.min(model.config().n_ctx_train);
    let rows: Vec<Vec<u32>> = ids.chunks_exact(row_len).map(<[u32]>::to_vec).collect();
    if rows.is_empty() {
        return Err(StatsError::CorpusTooSmall(ids.len()));
    }
    let dff = model.config().d_ff;
    let mut sums: Vec<Tensor<2>> = layers
        .iter()
        .map(|_| Tensor::zeros([dff, dff], model.device()))
        .collect();
    progress.start("key statistics", rows.len().div_ceil(ROWS_PER_PASS) as u64);
    for chunk in rows.chunks(ROWS_PER_PASS) {
        let batch = Batch::new(chunk, tok.eos());
        let capture = capture_keys(model, &batch, layers, None);
        for (sum, &l) in sums.iter_mut().zip(layers) {
            let k = capture.take(l).expect("layer ran").detach();
            let k = k.reshape([batch.rows * batch.t, dff]);
            *sum = sum.clone() + k.clone().transpose().matmul(k);
        }
        progress.advance(1);
    }
    progress.finish();
    let n = rows.len() * row_len;
    Ok(sums
        .into_iter()
        .zip(layers)
        .map(|(s, &layer)| LayerStats {
            layer,
            mom2: (s / n as f32)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 stats"),
            dim: dff,
            tokens: n,
        })
        .collect())
}

/// A corpus the model writes itself: sampled continuations (temperature 1, top-p 0.95,
/// seeded) of a few neutral openings, `tokens` tokens in all. The fallback when no text file
/// is at hand; slower to make than reading text (one decode step per token).
pub fn generated_corpus(model: &Llama, tok: &Tokenizer, tokens: usize, seed: u64) -> String {
    use engram_runtime::generate::{Sampler, SamplingParams};
    use engram_runtime::model::llama::Logits;
    const OPENINGS: [&str; 8] = [
        "The",
        "In 1887,",
        "She said",
        "Scientists",
        "Once upon a time",
        "The city",
        "My",
        "Today",
    ];
    let per = ROW_TOKENS;
    let mut text = String::new();
    for (i, opening) in OPENINGS.iter().cycle().enumerate() {
        if i * per >= tokens {
            break;
        }
        let mut sampler = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.95,
            seed: seed + i as u64,
        });
        let prompt = tok.encode(opening, false);
        // A row never runs past the model's context (small models have less than a row).
        let per = per.min(model.config().n_ctx_train.saturating_sub(prompt.len()));
        let mut cache = model.new_cache(1, prompt.len() + per);
        let mut input = prompt;
        let mut out = Vec::with_capacity(per);
        for _ in 0..per {
            let Ok(logits) = model.forward(&input, 1, Some(&mut cache), None, Logits::Last) else {
                break; // the context is full
            };
            let v = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
            let next = sampler.sample(&v);
            if tok.is_eog(next) {
                break;
            }
            out.push(next);
            input = vec![next];
        }
        text.push_str(opening);
        text.push_str(&tok.decode(&out));
        text.push_str("\n\n");
    }
    text
}
