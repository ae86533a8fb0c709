//! Text generation: greedy and seeded temperature / top-k / top-p sampling, stop tokens, a
//! streaming callback and context-length errors.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::model::kv_cache::{ContextFull, KvCache};
use burn::tensor::Tensor;

use crate::model::llama::{Decoder, LinearAdapter, Llama, Logits};

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (`0` keeps all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (`1.0` keeps all).
    pub top_p: f32,
    /// Seed of the sampler's random stream: the same seed gives the same tokens.
    pub seed: u64,
}

impl SamplingParams {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges [`generate_with`] relies on: `temperature` finite and not negative,
    /// `top_p` finite in `(0, 1]`. (`top_k` and `seed` take any value.)
    pub fn check(&self) -> Result<(), GenerateError> {
        let bad = |name, value: f32, expected| {
            Err(GenerateError::InvalidSampling {
                name,
                value: value.to_string(),
                expected,
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature", self.temperature, "finite and >= 0");
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

/// Picks tokens from logits; holds the random stream so a run is reproducible from its seed.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            scratch: Vec::new(),
        }
    }

    /// The next token for one position's logits.
    ///
    /// Non-finite logits are never chosen; if every logit is non-finite the result is token 0.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let cand = &mut self.scratch;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (l * inv_t, i as u32)),
        );
        if cand.is_empty() {
            return 0;
        }
        let k = match self.params.top_k {
            0 => cand.len(),
            k => k.min(cand.len()),
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            cand.truncate(k);
        }
        cand.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let max = cand[0].0;
        let mut total = 0.0f64;
        for c in cand.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0 as f64;
        }
        if self.params.top_p < 1.0 {
            let mut cum = 0.0f64;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                cum += c.0 as f64 / total;
                if cum >= self.params.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
            total = cand.iter().map(|c| c.0 as f64).sum();
        }
        let mut r = self.rng.random::<f64>() * total;
        for c in cand.iter() {
            r -= c.0 as f64;
            if r <= 0.0 {
                return c.1;
            }
        }
        cand[cand.len() - 1].1
    }
}

/// Index of the largest finite logit (the lowest index on ties); 0 when none is finite.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(f32, u32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_finite() && best.is_none_or(|(b, _)| l > b) {
            best = Some((l, i as u32));
        }
    }
    best.map_or(0, |(_, i)| i)
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Stop after this many new tokens.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// Generation stops when one of these is produced (it is included in the output).
    pub stop_tokens: Vec<u32>,
    /// KV-cache capacity in positions (prompt + new tokens); at most the trained context.
    pub context: usize,
    /// Runs the prompt on the fused CPU path ([`Decoder::prefill`]) where it can take the
    /// model and adaptation (on by default; the burn graph otherwise, and always for soft
    /// prompts and adapters that are not low-rank). Its logits are the fused decoder's, within
    /// `DECODE_TOLERANCE` of the graph's; both meet llama.cpp parity (`tests/parity.rs`).
    pub fused_prefill: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingParams::greedy(),
            stop_tokens: Vec::new(),
            context: 2048,
            fused_prefill: true,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` were produced.
    MaxTokens,
    /// A stop token was produced.
    StopToken(u32),
    /// The context is full.
    ContextFull,
    /// The streaming callback asked to stop.
    Callback,
}

/// The result of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// The new tokens (the prompt is not repeated).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Wall time of the prompt pass (and the first token's sampling).
    pub prefill_time: Duration,
    /// Wall time of the remaining token steps.
    pub decode_time: Duration,
}

/// Generation could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The prompt has no tokens.
    #[error("empty prompt")]
    EmptyPrompt,
    /// A sampling parameter is out of its range ([`SamplingParams::check`]).
    #[error("sampling parameter `{name}` is {value}; it must be {expected}")]
    InvalidSampling {
        /// The parameter's field name.
        name: &'static str,
        /// The value given, as text.
        value: String,
        /// The range it must be in.
        expected: &'static str,
    },
    /// The prompt alone does not fit the context.
    #[error("prompt does not fit the context: {0}")]
    PromptTooLong(ContextFull),
    /// A prompt token is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange {
        /// The bad id.
        id: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
}

/// What a forward pass adds to the frozen base: a linear adapter (LoRA, edits) and/or a soft
/// prompt prepended to the input embeddings (prompt tuning). `Adaptation::default()` is the base.
#[derive(Clone, Copy, Default)]
pub struct Adaptation<'a> {
    /// Deltas added to the frozen projections.
    pub linear: Option<&'a dyn LinearAdapter>,
    /// Virtual-token embeddings `(n_virtual, d_model)` placed before the prompt.
    pub prefix: Option<&'a Tensor<2>>,
}

impl<'a> Adaptation<'a> {
    /// Only a linear adapter.
    pub fn linear(adapter: &'a dyn LinearAdapter) -> Self {
        Self {
            linear: Some(adapter),
            prefix: None,
        }
    }

    /// Positions the prefix takes in the context.
    pub fn prefix_len(&self) -> usize {
        self.prefix.map_or(0, |p| p.dims()[0])
    }

    /// Logits of `tokens` (`batch` rows) with this adaptation; with a prefix, the logits of the
    /// prefix positions are not returned (`Logits::All` gives `(batch, t, n_vocab)`).
    pub fn forward(
        &self,
        model: &Llama,
        tokens: &[u32],
        batch: usize,
        cache: Option<&mut KvCache>,
        logits: Logits,
    ) -> Result<Tensor<3>, ContextFull> {
        let Some(prefix) = self.prefix else {
            return model.forward(tokens, batch, cache, self.linear, logits);
        };
        let [n, d] = prefix.dims();
        let x = model.embed_with(tokens, batch, self.linear);
        let t = x.dims()[1];
        let p = prefix.clone().reshape([1, n, d]).repeat_dim(0, batch);
        let y = model.forward_embeddings(Tensor::cat(vec![p, x], 1), cache, self.linear, logits)?;
        Ok(match logits {
            Logits::Last => y,
            Logits::All => {
                let v = y.dims()[2];
                y.slice([0..batch, n..n + t, 0..v])
            }
        })
    }
}

/// Generates up to `opts.max_new_tokens` after `prompt`, calling `on_token` with each new token
/// as soon as it is chosen; `on_token` returning `ControlFlow::Break` stops early.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation, GenerateError> {
    generate_with(model, prompt, opts, Adaptation::default(), on_token)
}

/// [`generate`] through an adapter and/or soft prompt.
pub fn generate_with(
    model: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
    adaptation: Adaptation<'_>,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<Generation, GenerateError> {
    opts.sampling.check()?;
    check_prompt(model, prompt)?;
    let capacity = opts.context.min(model.config().n_ctx_train).max(1);
    let requested = prompt.len() + adaptation.prefix_len();
    if requested > capacity {
        return Err(GenerateError::PromptTooLong(ContextFull {
            used: 0,
            requested,
            capacity,
        }));
    }
    let mut sampler = Sampler::new(opts.sampling.clone());

    let start = Instant::now();
    // With `fused_prefill` the fused path runs the prompt and the tokens after it when it can
    // take this adaptation. Otherwise (and for a soft prompt) the prompt runs through the graph
    // and the tokens after it on the fused path from the graph's cache; an adaptation the fused
    // path cannot take runs through the graph throughout.
    let positions = (requested + opts.max_new_tokens).min(capacity);
    let mut fused = match adaptation.prefix {
        None if opts.fused_prefill => Decoder::new(model, adaptation.linear, positions),
        _ => None,
    };
    // The graph's cache, only where the graph runs.
    let mut cache = fused.is_none().then(|| model.new_cache(1, capacity));
    let mut next = match (fused.as_mut(), cache.as_mut()) {
        (Some(d), _) => d.prefill(prompt).map(|logits| sampler.sample(logits)),
        (None, Some(cache)) => step(model, cache, prompt, adaptation, &mut sampler),
        (None, None) => unreachable!("the graph's cache exists without a fused decoder"),
    }
    .map_err(GenerateError::PromptTooLong)?;
    let decode = Adaptation {
        prefix: None,
        ..adaptation
    };
    let prefill_time = start.elapsed();
    let start = Instant::now();
    if let (None, Some(cache)) = (&fused, &cache) {
        fused = Decoder::from_cache(model, decode.linear, cache, positions);
    }
    let mut tokens = Vec::new();
    let stop = loop {
        tokens.push(next);
        if opts.stop_tokens.contains(&next) {
            break StopReason::StopToken(next);
        }
        if on_token(next).is_break() {
            break StopReason::Callback;
        }
        if tokens.len() >= opts.max_new_tokens {
            break StopReason::MaxTokens;
        }
        let stepped = match (fused.as_mut(), cache.as_mut()) {
            (Some(d), _) => d.step(next).map(|logits| sampler.sample(logits)),
            (None, Some(cache)) => step(model, cache, &[next], decode, &mut sampler),
            (None, None) => unreachable!("the graph's cache exists without a fused decoder"),
        };
        match stepped {
            Ok(t) => next = t,
            Err(_) => break StopReason::ContextFull,
        }
    };
    Ok(Generation {
        tokens,
        stop,
        prompt_tokens: prompt.len(),
        prefill_time,
        decode_time: start.elapsed(),
    })
}

/// Feeds `tokens` and samples the next one.
fn step(
    model: &Llama,
    cache: &mut KvCache,
    tokens: &[u32],
    adaptation: Adaptation<'_>,
    sampler: &mut Sampler,
) -> Result<u32, ContextFull> {
    let logits = adaptation.forward(model, tokens, 1, Some(cache), Logits::Last)?;
    let logits = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
    Ok(sampler.sample(&logits))
}

/// Refuses an empty prompt or a token id outside the model's vocabulary.
fn check_prompt(model: &Llama, tokens: &[u32]) -> Result<(), GenerateError> {
    let n_vocab = model.config().n_vocab;
    if tokens.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    match tokens.iter().find(|&&id| id as usize >= n_vocab) {
        Some(&id) => Err(GenerateError::TokenOutOfRange { id, n_vocab }),
        None => Ok(()),
    }
}

/// The logits of the last position of `tokens` (one sequence, no cache): for parity checks and
/// scoring.
pub fn last_logits(model: &Llama, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
    last_logits_with(model, tokens, Adaptation::default())
}

/// [`last_logits`] through an adapter and/or soft prompt.
pub fn last_logits_with(
    model: &Llama,
    tokens: &[u32],
    adaptation: Adaptation<'_>,
) -> Result<Vec<f32>, GenerateError> {
    check_prompt(model, tokens)?;
    // Checked before the forward pass: it would embed every token first.
    let capacity = model.config().n_ctx_train;
    let requested = tokens.len() + adaptation.prefix_len();
    if requested > capacity {
        return Err(GenerateError::PromptTooLong(ContextFull {
            used: 0,
            requested,
            capacity,
        }));
    }
    let logits = adaptation
        .forward(model, tokens, 1, None, Logits::Last)
        .map_err(GenerateError::PromptTooLong)?;
    Ok(logits.into_data().try_to_vec::<f32>().expect("f32 logits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_skips_nan() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, f32::NAN, 3.0, 2.0]), 2);
        assert_eq!(argmax(&[f32::NAN, -1.0, -2.0]), 1);
    }

    #[test]
    fn out_of_range_sampling_is_a_typed_error_naming_the_field() {
        assert_eq!(SamplingParams::greedy().check(), Ok(()));
        let with = |temperature, top_p| SamplingParams {
            temperature,
            top_p,
            ..SamplingParams::greedy()
        };
        assert_eq!(with(0.7, 0.9).check(), Ok(()));
        assert_eq!(with(0.0, 1.0).check(), Ok(()));
        for (params, field) in [
            (with(-0.1, 1.0), "temperature"),
            (with(f32::NAN, 1.0), "temperature"),
            (with(f32::INFINITY, 1.0), "temperature"),
            (with(1.0, 0.0), "top_p"),
            (with(1.0, 1.5), "top_p"),
            (with(1.0, f32::NAN), "top_p"),
        ] {
            match params.check() {
                Err(GenerateError::InvalidSampling { name, .. }) => assert_eq!(name, field),
                other => panic!("{params:?}: {other:?}"),
            }
        }
        let err = with(-1.0, 1.0).check().unwrap_err().to_string();
        assert!(err.contains("temperature") && err.contains("-1"), "{err}");
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 5,
            top_p: 1.0,
            seed: 7,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone());
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        let mut top5: Vec<u32> = (0..100).collect();
        top5.sort_by(|&x, &y| logits[y as usize].total_cmp(&logits[x as usize]));
        top5.truncate(5);
        assert!(
            a.iter().all(|t| top5.contains(t)),
            "{a:?} outside top-5 {top5:?}"
        );
        assert!(
            a.iter().collect::<std::collections::HashSet<_>>().len() > 1,
            "sampling never varied"
        );
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // One token holds ~97% of the mass: top_p 0.9 must always pick it.
        let mut logits = vec![0.0f32; 10];
        logits[3] = 6.0;
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.9,
            seed: 1,
        });
        assert!((0..200).all(|_| s.sample(&logits) == 3));
    }
}
