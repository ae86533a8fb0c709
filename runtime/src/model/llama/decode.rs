//! The fused decode path: one token through the llama graph on the CPU kernels, without burn.
//!
//! Per token the weights are streamed once (30 blocks, then the vocabulary projection) and
//! nothing else is allocated: every buffer lives in the [`Decoder`]. All threads of the model's
//! [`CpuContext`](crate::cpu::CpuContext) run the whole token together ([`crate::cpu::Team`]):
//! each takes its share of every matrix's rows and of the attention heads, and the shares meet
//! once per matrix (five times a block: after q/k/v, attention, o, gate/up and down). What every
//! share needs whole (norms, activation quantization, residual adds) each computes itself, on the
//! same numbers in the same order, so the shares never disagree.
//!
//! Adapters join through [`LinearAdapter::decode_delta`]: for a low-rank term `B · (A · x)`
//! every share computes the whole `h = A · x` (rank × n_in, a few percent of its rows' work)
//! and adds `B · h` to its own rows, rank by rank in a fixed order. So an adapter costs no
//! extra barrier, and each output is the same sum in the same order whatever the number of
//! shares: a token's logits do not depend on how many threads ran it (greedy decoding with an
//! adapter is reproducible while the decoder switches between one thread and all). A routed
//! term ([`LinearAdapter::decode_routed`], the gated edit memory) reads the down-projection's
//! whole input, which every share holds: share 0 runs it before the barrier that follows the
//! product, and every share adds its output after it, so it costs no extra barrier either.
//!
//! A prompt runs through the same decoder m tokens at a time ([`Decoder::prefill`], `prefill.rs`):
//! its keys and values land in the decoder's own cache, and decoding continues from there.
//! Several sequences run as one pass ([`Decoder::prefill_batch`]: each weight row is read once
//! for all their rows), which is how model editing scores its probes. Training stays on the burn
//! graph; `tests/decode.rs` checks that the two give the same logits within [`DECODE_TOLERANCE`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use engram_kernels::quant::vec_dot_f32_ref as dot;
use engram_kernels::{
    GgmlType, QMatrix, activation_bytes, attention_mix, attention_scores, matmul_rows,
    matvec_interleaved, quantize_activations,
};
use half::f16;

use super::choice::{EXPLORE_EVERY, TwoWay};
use super::{Block, Llama};
use crate::backend::QWeight;
use crate::cpu::Team;
use crate::model::arch::RopeStyle;
use crate::model::attention::AttentionPrecision;
use crate::model::hooks::{DecodeDelta, LinearAdapter, LowRank, Norm, Proj, RoutedTerm};
use crate::model::kv_cache::{ContextFull, KvCache};

mod prefill;

/// |Δlogit| allowed between the fused decode path and the burn graph on the same positions, over
/// the graph's 20 largest logits (the measure and the bound of the llama.cpp parity tests): the
/// same kernels on the same weights, but norms, softmax and adapter terms sum in another order.
/// On the real model the residual streams agree to the last printed digit for 22 blocks; then an
/// 8-bit activation code rounds the other way and the difference grows through the last blocks
/// to ≈ 0.3 on the top logits (the top token is the same).
pub const DECODE_TOLERANCE: f32 = 0.75;

/// Rows a share's part of a matrix is cut at: the interleaved layout's groups (a multiple of
/// the row kernels' 4-row tiles).
const ROW_ALIGN: usize = engram_kernels::INTERLEAVE_ROWS;

/// The fused single-token decoder of a [`Llama`] (see the module docs), with its own KV cache.
pub struct Decoder<'m> {
    model: &'m Llama,
    plan: Plan,
    cache: KvStore,
    shared: Shared,
    locals: Vec<Mutex<Local>>,
    logits: Vec<f32>,
    threads: ThreadChoice,
    /// The m = 1 products' form (way 0 one weight row per call, way 1 the 4 × 1 tile: the same
    /// bits, and which is faster depends on the core; see `engram_kernels::set_single_row_tile`),
    /// where the kernels have the choice.
    tile: Option<TwoWay>,
    /// Buffers of [`Decoder::prefill`], grown to the longest prompt it has run.
    prefill: prefill::Buffers,
    /// The adapter's routed term ([`LinearAdapter::decode_routed`]): this decoder's sequence.
    routed: Option<Mutex<Box<dyn RoutedTerm>>>,
}

/// Which thread count runs the next token: all of the pool's, or one. On an idle machine all
/// threads win by far; on an oversubscribed one a share that the OS deschedules stalls the
/// others at the next barrier, and one thread is faster. The decoder times its tokens and runs
/// the faster ([`TwoWay`]: way 0 one thread, way 1 all), so a second thread helps where it can
/// and never costs more than the retries where it cannot.
struct ThreadChoice {
    max: usize,
    ways: TwoWay,
    adaptive: bool,
}

impl ThreadChoice {
    /// The thread count for the next token, and whether to time it.
    fn next(&mut self) -> (usize, bool) {
        if self.max == 1 {
            return (1, false);
        }
        if !self.adaptive {
            return (self.max, false);
        }
        let (way, timed) = self.ways.next();
        ([1, self.max][way], timed)
    }

    fn record(&mut self, threads: usize, seconds: f64) {
        self.ways.record(usize::from(threads != 1), seconds);
    }
}

/// What stays fixed for a decoder: norms, adapter terms, RoPE frequencies, precision.
struct Plan {
    layers: Vec<LayerPlan>,
    output_norm: Vec<f32>, // (d_model)
    inv_freq: Vec<f64>,    // (d_head / 2)
    f16: bool,
    half_split: bool, // RoPE pairs (i, i + d_head/2), as a Hugging Face checkpoint's q/k rows
}

struct LayerPlan {
    attn_norm: Vec<f32>, // (d_model)
    ffn_norm: Vec<f32>,  // (d_model)
    deltas: [Option<LowRank>; 7],
    /// The routed term reads this block's down-projection input.
    routed_down: bool,
}

impl LayerPlan {
    fn delta(&self, p: Proj) -> Option<&LowRank> {
        self.deltas[proj_index(p)].as_ref()
    }
}

fn proj_index(p: Proj) -> usize {
    Proj::ALL
        .iter()
        .position(|&q| q == p)
        .expect("a projection")
}

/// Keys and values of every layer, rounded as the attention reads them.
struct KvStore {
    k: Vec<f32>, // (n_layer, capacity, d_kv)
    v: Vec<f32>, // (n_layer, capacity, d_kv)
    capacity: usize,
    len: usize,
    d_kv: usize,
    /// Keys, values, queries and probabilities rounded to f16 (the f16 attention precision).
    f16: bool,
}

impl KvStore {
    /// The filled part of layer `l` in `k` or `v`.
    fn filled(&self, l: usize) -> std::ops::Range<usize> {
        let start = l * self.capacity * self.d_kv;
        start..start + self.len * self.d_kv
    }
}

/// f32 values every share reads after a barrier (stored as bits: relaxed atomic stores and
/// loads compile to plain moves; the barrier orders them).
#[derive(Default)]
struct SharedF32(Box<[AtomicU32]>);

impl SharedF32 {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| AtomicU32::new(0)).collect())
    }

    fn store(&self, offset: usize, src: &[f32]) {
        for (a, &v) in self.0[offset..offset + src.len()].iter().zip(src) {
            a.store(v.to_bits(), Relaxed);
        }
    }

    fn load(&self, offset: usize, dst: &mut [f32]) {
        let n = dst.len();
        for (v, a) in dst.iter_mut().zip(&self.0[offset..offset + n]) {
            *v = f32::from_bits(a.load(Relaxed));
        }
    }
}

/// The buffers shares exchange: each projection's output (its adapter term included).
struct Shared {
    out: [SharedF32; 7], // per projection: (n_out)
    ff: SharedF32,       // (d_ff)
    att: SharedF32,      // (n_head * d_head)
    logits: SharedF32,   // (n_vocab)
    /// The routed term's output at the current block's down-projection, and whether it added
    /// anything there (share 0 writes both before the barrier after the product).
    term: SharedF32, // (d_model)
    term_added: AtomicBool,
}

/// One share's private buffers.
struct Local {
    x: Vec<f32>,  // (d_model) the residual stream
    xn: Vec<f32>, // (max n_in) the current product's f32 input
    xq: Vec<u8>,  // the current product's quantized input
    xq_ty: Option<GgmlType>,
    q: Vec<f32>,    // (n_head * d_head)
    k: Vec<f32>,    // (d_kv)
    v: Vec<f32>,    // (d_kv)
    att: Vec<f32>,  // (d_head)
    rows: Vec<f32>, // (max n_out) this share's rows of a product
    gate: Vec<f32>, // (d_ff)
    h: Vec<f32>,    // (max rank)
    term: Vec<f32>, // (d_model) the routed term's output (share 0)
    scores: Vec<f32>,
    new_k: Vec<f32>, // (n_layer, d_kv) this token's keys (share 0 keeps them)
    new_v: Vec<f32>, // (n_layer, d_kv)
    logits: Vec<f32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'m> Decoder<'m> {
    /// A decoder over `model` with `adapter` and an empty cache of `capacity` positions, or
    /// `None` when the fused path cannot run this configuration: a non-CPU device, f32
    /// activations, or an adapter term that is neither low-rank nor a routed term on the
    /// down-projection ([`DecodeDelta::Opaque`], a dense weight or norm). Callers then decode
    /// through the graph.
    ///
    /// # Panics
    /// When an adapter's factors do not fit the model's shapes.
    pub fn new(
        model: &'m Llama,
        adapter: Option<&dyn LinearAdapter>,
        capacity: usize,
    ) -> Option<Self> {
        if !crate::backend::is_cpu(model.device()) || model.output.f32_activations() {
            return None;
        }
        if model
            .blocks
            .iter()
            .any(|b| Proj::ALL.iter().any(|&p| b.proj(p).f32_activations()))
        {
            return None;
        }
        let routed = adapter.and_then(|a| a.decode_routed());
        let plan = Plan::new(model, adapter, routed.as_deref())?;
        // Interleave the weights now (once per model), not inside the first token's team run,
        // into one buffer in the order a token reads them (q, k, v, o, gate, up, down per block,
        // then the head).
        let order = [
            Proj::Q,
            Proj::K,
            Proj::V,
            Proj::O,
            Proj::Gate,
            Proj::Up,
            Proj::Down,
        ];
        let weights: Vec<&QWeight> = model
            .blocks
            .iter()
            .flat_map(|b| order.map(|p| b.proj(p)))
            .chain([&model.output])
            .collect();
        QWeight::interleave_together(&weights);
        // The m = 1 form choice below only matters for Q4_1 rows left on the ggml layout.
        let mut q4_1_rows_left = false;
        for w in model
            .blocks
            .iter()
            .flat_map(|b| Proj::ALL.map(|p| b.proj(p)))
        {
            let covered = w.interleaved().map_or(0, |iw| iw.rows());
            q4_1_rows_left |= w.ty() == GgmlType::Q4_1 && covered < w.n_out();
        }
        let c = &model.config;
        let capacity = capacity.min(c.n_ctx_train);
        let (d, dkv, dff, n_vocab) = (c.d_model, c.d_kv(), c.d_ff, c.n_vocab);
        let n_out = |p: Proj| model.blocks[0].proj(p).n_out();
        let max_out = Proj::ALL.iter().map(|&p| n_out(p)).max().unwrap_or(0);
        let max_in = d.max(dff).max(c.n_head * c.d_head);
        let max_rank = plan
            .layers
            .iter()
            .flat_map(|l| l.deltas.iter().flatten())
            .map(|lr| lr.rank)
            .max()
            .unwrap_or(0);
        let threads = model.output.cpu().threads();
        let outs = || Proj::ALL.map(|p| SharedF32::new(n_out(p)));
        let shared = Shared {
            out: outs(),
            ff: SharedF32::new(dff),
            att: SharedF32::new(c.n_head * c.d_head),
            logits: SharedF32::new(n_vocab),
            term: SharedF32::new(d),
            term_added: AtomicBool::new(false),
        };
        let locals = (0..threads)
            .map(|t| {
                Mutex::new(Local {
                    x: vec![0.0; d],
                    xn: vec![0.0; max_in],
                    xq: Vec::new(),
                    xq_ty: None,
                    q: vec![0.0; c.n_head * c.d_head],
                    k: vec![0.0; dkv],
                    v: vec![0.0; dkv],
                    att: vec![0.0; c.d_head],
                    rows: vec![0.0; max_out.max(n_vocab)],
                    gate: vec![0.0; dff],
                    h: vec![0.0; max_rank],
                    term: if t == 0 && routed.is_some() {
                        vec![0.0; d]
                    } else {
                        Vec::new()
                    },
                    scores: vec![0.0; capacity + 1],
                    new_k: vec![0.0; c.n_layer * dkv],
                    new_v: vec![0.0; c.n_layer * dkv],
                    logits: if t == 0 {
                        vec![0.0; n_vocab]
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect();
        let round = plan.f16;
        Some(Self {
            model,
            plan,
            cache: KvStore {
                k: vec![0.0; c.n_layer * capacity * dkv],
                v: vec![0.0; c.n_layer * capacity * dkv],
                capacity,
                len: 0,
                d_kv: dkv,
                f16: round,
            },
            shared,
            locals,
            logits: vec![0.0; n_vocab],
            threads: ThreadChoice {
                max: threads,
                ways: TwoWay::new(1, 0, 0),
                adaptive: true,
            },
            // After the thread count's first two timed tokens, so the two are not confounded.
            tile: (engram_kernels::single_row_tile_matters() && q4_1_rows_left)
                .then(|| TwoWay::new(0, 2, EXPLORE_EVERY / 2)),
            prefill: prefill::Buffers::default(),
            routed: routed.map(Mutex::new),
        })
    }

    /// [`Decoder::new`] continuing from a cache the graph filled (a prompt run through
    /// [`Llama::forward`]); `capacity` (at least `cache.len()`) bounds the positions. `None`
    /// also for an adapter with a routed term: the graph's routing state of the prompt does not
    /// carry over, so such a sequence stays on the graph.
    ///
    /// # Panics
    /// When the cache holds more than one sequence or was made for another model.
    pub fn from_cache(
        model: &'m Llama,
        adapter: Option<&dyn LinearAdapter>,
        cache: &KvCache,
        capacity: usize,
    ) -> Option<Self> {
        assert_eq!(cache.batch(), 1, "Decoder::from_cache: one sequence");
        let mut dec = Self::new(model, adapter, capacity.max(cache.len()))?;
        if dec.routed.is_some() {
            return None;
        }
        let c = &model.config;
        let (len, dh, hkv) = (cache.len(), c.d_head, c.n_head_kv);
        let round = dec.plan.f16;
        let kv = &mut dec.cache;
        for l in 0..c.n_layer {
            let (k, v) = cache.layer_values(l);
            for (src, dst) in [(k, &mut kv.k), (v, &mut kv.v)] {
                let base = l * kv.capacity * kv.d_kv;
                // (n_head_kv, len, d_head) → (len, n_head_kv · d_head)
                for h in 0..hkv {
                    for p in 0..len {
                        let s = &src[(h * len + p) * dh..][..dh];
                        let o = &mut dst[base + p * kv.d_kv + h * dh..][..dh];
                        o.copy_from_slice(s);
                        if round {
                            round_f16(o);
                        }
                    }
                }
            }
        }
        kv.len = len;
        Some(dec)
    }

    /// Runs every token on all the pool's threads (`false`), or picks per token between all
    /// and one by their measured speed (`true`, the default: a loaded machine can make a
    /// second thread a loss).
    pub fn set_adaptive_threads(&mut self, on: bool) {
        self.threads.adaptive = on;
    }

    /// Threads the last tokens ran on, on average weighted to the recent ones: `(seconds per
    /// token on one thread, on all)`, each `None` until measured.
    pub fn token_seconds(&self) -> (Option<f64>, Option<f64>) {
        (self.threads.ways.ewma[0], self.threads.ways.ewma[1])
    }

    /// Positions in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.cache.len
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Empties the cache: the next token is a new sequence's first (a routed term starts over
    /// too). Reusing a decoder this way allocates nothing.
    pub fn reset(&mut self) {
        self.cache.len = 0;
    }

    /// Runs `token` at the next position and returns its logits `(n_vocab)`.
    ///
    /// # Panics
    /// When `token` is outside the vocabulary (callers validate user input).
    pub fn step(&mut self, token: u32) -> Result<&[f32], ContextFull> {
        let c = &self.model.config;
        let pos = self.cache.len;
        if pos + 1 > self.cache.capacity {
            return Err(ContextFull {
                used: pos,
                requested: 1,
                capacity: self.cache.capacity,
            });
        }
        assert!(
            (token as usize) < c.n_vocab,
            "token {token} out of range ({} rows)",
            c.n_vocab
        );
        let (cos, sin): (Vec<f32>, Vec<f32>) = self
            .plan
            .inv_freq
            .iter()
            .map(|&f| {
                let theta = pos as f64 * f;
                (theta.cos() as f32, theta.sin() as f32)
            })
            .unzip();
        let token_ctx = TokenCtx {
            model: self.model,
            plan: &self.plan,
            cache: &self.cache,
            shared: &self.shared,
            token,
            pos,
            routed: self.routed.as_ref(),
            cos: &cos,
            sin: &sin,
        };
        let locals = &self.locals;
        let (threads, time_threads) = self.threads.next();
        let tile = self.tile.as_mut().map(|t| {
            let (way, timed) = t.next();
            engram_kernels::set_single_row_tile(way == 1);
            (way, timed)
        });
        let start = std::time::Instant::now();
        self.model.output.cpu().team_of(threads, &|team| {
            token_ctx.run(team, &mut lock(&locals[team.index()]));
        });
        let seconds = start.elapsed().as_secs_f64();
        if time_threads {
            self.threads.record(threads, seconds);
        }
        if let (Some(t), Some((way, true))) = (self.tile.as_mut(), tile) {
            t.record(way, seconds);
        }
        let local = lock(&self.locals[0]);
        let kv = &mut self.cache;
        for l in 0..c.n_layer {
            let at = (l * kv.capacity + pos) * kv.d_kv;
            let src = l * kv.d_kv..(l + 1) * kv.d_kv;
            kv.k[at..at + kv.d_kv].copy_from_slice(&local.new_k[src.clone()]);
            kv.v[at..at + kv.d_kv].copy_from_slice(&local.new_v[src]);
        }
        kv.len += 1;
        self.logits.copy_from_slice(&local.logits);
        Ok(&self.logits)
    }
}

impl Plan {
    fn new(
        model: &Llama,
        adapter: Option<&dyn LinearAdapter>,
        routed: Option<&dyn RoutedTerm>,
    ) -> Option<Self> {
        let c = &model.config;
        // The other families' options (biases, windows, caps, ...) run on the graph.
        if !model.is_plain_llama() {
            return None;
        }
        if let Some(a) = adapter {
            let dense = a.embedding().is_some()
                || a.output_weight().is_some()
                || a.norm_weight(Norm::Output).is_some()
                || (0..c.n_layer).any(|l| {
                    a.norm_weight(Norm::Attn(l)).is_some()
                        || a.norm_weight(Norm::Ffn(l)).is_some()
                        || Proj::ALL.iter().any(|&p| a.dense_weight(l, p).is_some())
                });
            if dense {
                return None;
            }
        }
        let vector = |t: &burn::tensor::Tensor<1>| {
            t.clone()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 norm weights")
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for (l, block) in model.blocks.iter().enumerate() {
            let mut deltas: [Option<LowRank>; 7] = Default::default();
            for (i, &p) in Proj::ALL.iter().enumerate() {
                deltas[i] = match adapter.map_or(DecodeDelta::None, |a| a.decode_delta(l, p)) {
                    DecodeDelta::None => None,
                    DecodeDelta::Opaque => return None,
                    DecodeDelta::LowRank(lr) if lr.rank == 0 => None,
                    DecodeDelta::LowRank(lr) => {
                        let w = block.proj(p);
                        assert!(
                            lr.a.len() == lr.rank * w.n_in() && lr.bt.len() == lr.rank * w.n_out(),
                            "decode delta of block {l} {p:?}: rank {} factors of {} and {} values \
                             do not fit {} × {}",
                            lr.rank,
                            lr.a.len(),
                            lr.bt.len(),
                            w.n_out(),
                            w.n_in()
                        );
                        Some(lr)
                    }
                };
            }
            // A routed term is served on the down-projection only (see `RoutedTerm`).
            let reads = |p: Proj| routed.is_some_and(|r| r.reads(l, p));
            if Proj::ALL.iter().any(|&p| p != Proj::Down && reads(p)) {
                return None;
            }
            layers.push(LayerPlan {
                attn_norm: vector(&block.attn_norm),
                ffn_norm: vector(&block.ffn_norm),
                deltas,
                routed_down: reads(Proj::Down),
            });
        }
        let half = c.d_head / 2;
        let inv_freq = (0..half)
            .map(|i| (c.rope_base as f64).powf(-2.0 * i as f64 / c.rope_dim as f64))
            .collect();
        Some(Plan {
            layers,
            output_norm: vector(&model.output_norm),
            inv_freq,
            f16: model.attention == AttentionPrecision::F16,
            half_split: model.arch.rope_style == RopeStyle::HalfSplit,
        })
    }
}

/// Everything one token's shares read.
struct TokenCtx<'a> {
    model: &'a Llama,
    plan: &'a Plan,
    cache: &'a KvStore,
    shared: &'a Shared,
    token: u32,
    pos: usize,
    routed: Option<&'a Mutex<Box<dyn RoutedTerm>>>,
    cos: &'a [f32], // (d_head / 2)
    sin: &'a [f32], // (d_head / 2)
}

impl TokenCtx<'_> {
    fn run(&self, team: &Team<'_>, me: &mut Local) {
        let c = &self.model.config;
        let (d, dh, dkv) = (c.d_model, c.d_head, c.d_kv());
        let s = self.shared;
        self.model
            .embedding
            .dequantize_rows(&[self.token], &mut me.x);
        for (l, block) in self.model.blocks.iter().enumerate() {
            let lp = &self.plan.layers[l];
            // Attention: q, k, v.
            rms_norm(&me.x, &lp.attn_norm, c.rms_eps, &mut me.xn[..d]);
            me.xq_ty = None;
            for p in [Proj::Q, Proj::K, Proj::V] {
                self.project(team, me, block, lp, p, d);
            }
            team.sync();
            s.out[proj_index(Proj::Q)].load(0, &mut me.q);
            s.out[proj_index(Proj::K)].load(0, &mut me.k);
            s.out[proj_index(Proj::V)].load(0, &mut me.v);
            let heads = team.part(c.n_head, 1);
            for h in heads.clone() {
                self.rope(&mut me.q[h * dh..(h + 1) * dh]);
            }
            for h in 0..c.n_head_kv {
                self.rope(&mut me.k[h * dh..(h + 1) * dh]);
            }
            if self.plan.f16 {
                round_f16(&mut me.k);
                round_f16(&mut me.v);
            }
            if team.index() == 0 {
                me.new_k[l * dkv..(l + 1) * dkv].copy_from_slice(&me.k);
                me.new_v[l * dkv..(l + 1) * dkv].copy_from_slice(&me.v);
            }
            for h in heads {
                self.attend(l, h, me);
                s.att.store(h * dh, &me.att);
            }
            team.sync();
            s.att.load(0, &mut me.xn[..d]);
            me.xq_ty = None;
            self.project(team, me, block, lp, Proj::O, d);
            team.sync();
            self.add_output(Proj::O, me, false);

            // Feed-forward.
            rms_norm(&me.x, &lp.ffn_norm, c.rms_eps, &mut me.xn[..d]);
            me.xq_ty = None;
            // Each share needs only its own rows of gate and up: no exchange before SiLU.
            let rows = team.part(c.d_ff, ROW_ALIGN);
            let n = rows.len();
            self.adapted_rows(me, block, lp, Proj::Gate, rows.clone(), d);
            me.gate[..n].copy_from_slice(&me.rows[..n]);
            self.adapted_rows(me, block, lp, Proj::Up, rows.clone(), d);
            for (g, u) in me.gate[..n].iter_mut().zip(&me.rows[..n]) {
                *g = silu(*g) * u;
            }
            s.ff.store(rows.start, &me.gate[..n]);
            team.sync();
            s.ff.load(0, &mut me.xn[..c.d_ff]);
            me.xq_ty = None;
            self.project(team, me, block, lp, Proj::Down, c.d_ff);
            if lp.routed_down && team.index() == 0 {
                self.routed_term(l, me);
            }
            team.sync();
            self.add_output(Proj::Down, me, lp.routed_down);
        }
        vocabulary(self.model, self.plan, s, team, me);
    }
}

/// The vocabulary projection of the residual `me.x` (the same on every share), split by rows;
/// share 0 ends with the logits in `me.logits`.
fn vocabulary(model: &Llama, plan: &Plan, s: &Shared, team: &Team<'_>, me: &mut Local) {
    let c = &model.config;
    let d = c.d_model;
    rms_norm(&me.x, &plan.output_norm, c.rms_eps, &mut me.xn[..d]);
    me.xq_ty = None;
    let w = &model.output;
    let rows = team.part(w.n_out(), ROW_ALIGN);
    product(me, w, rows.clone(), d);
    s.logits.store(rows.start, &me.rows[..rows.len()]);
    team.sync();
    if team.index() == 0 {
        s.logits.load(0, &mut me.logits);
    }
}

/// This share's rows `rows` of `w · xn[..n_in]` into `me.rows[..rows.len()]`, quantizing `xn`
/// first unless it already is for `w`'s type.
fn product(me: &mut Local, w: &QWeight, rows: std::ops::Range<usize>, n_in: usize) {
    if me.xq_ty != Some(w.ty()) {
        me.xq.resize(activation_bytes(w.ty(), n_in), 0);
        quantize_activations(w.ty(), &me.xn[..n_in], &mut me.xq);
        me.xq_ty = Some(w.ty());
    }
    let n = rows.len();
    let out = &mut me.rows[..n];
    // Whole groups on the interleaved rows (team parts start on a group), the rest (a
    // matrix whose rows are not whole groups) on the ggml rows.
    let split = match w.interleaved() {
        Some(iw) if rows.start.is_multiple_of(ROW_ALIGN) => {
            let end = rows.end.min(iw.rows()).max(rows.start);
            let end = end - (end - rows.start) % ROW_ALIGN;
            matvec_interleaved(&iw, rows.start..end, &me.xq, &mut out[..end - rows.start]);
            end
        }
        _ => rows.start,
    };
    let done = split - rows.start;
    matmul_rows(&w.matrix(), split..rows.end, &me.xq, 1, &mut out[done..]);
}

impl TokenCtx<'_> {
    /// This share's rows `rows` of projection `p`, its adapter term included, into
    /// `me.rows[..rows.len()]`. Every share computes the whole `h = A · xn` (identically), then
    /// adds `B · h` to its rows one rank at a time: each output is the same sum in the same
    /// order whichever share computes it, so the result does not depend on the team's size.
    fn adapted_rows(
        &self,
        me: &mut Local,
        block: &Block,
        lp: &LayerPlan,
        p: Proj,
        rows: std::ops::Range<usize>,
        n_in: usize,
    ) {
        let w = block.proj(p);
        product(me, w, rows.clone(), n_in);
        let Some(lr) = lp.delta(p) else {
            return;
        };
        let n_out = w.n_out();
        let a = QMatrix::new(GgmlType::F32, bytemuck::cast_slice(&lr.a), lr.rank, n_in)
            .expect("factor shapes checked in Plan::new");
        let h = &mut me.h[..lr.rank];
        matmul_rows(&a, 0..lr.rank, bytemuck::cast_slice(&me.xn[..n_in]), 1, h);
        let out = &mut me.rows[..rows.len()];
        for (j, &hj) in h.iter().enumerate() {
            let b = &lr.bt[j * n_out + rows.start..j * n_out + rows.end];
            for (o, &bj) in out.iter_mut().zip(b) {
                *o += hj * bj;
            }
        }
    }

    /// This share's rows of projection `p` (adapter term included) into the shared output.
    fn project(
        &self,
        team: &Team<'_>,
        me: &mut Local,
        block: &Block,
        lp: &LayerPlan,
        p: Proj,
        n_in: usize,
    ) {
        let rows = team.part(block.proj(p).n_out(), ROW_ALIGN);
        self.adapted_rows(me, block, lp, p, rows.clone(), n_in);
        self.shared.out[proj_index(p)].store(rows.start, &me.rows[..rows.len()]);
    }

    /// Share 0: the routed term of block `layer`'s down-projection on its input `me.xn`, to
    /// the exchange (read after the barrier by [`TokenCtx::add_output`]).
    fn routed_term(&self, layer: usize, me: &mut Local) {
        let c = &self.model.config;
        let routed = self.routed.expect("a routed layer has a routed term");
        let term = &mut me.term[..c.d_model];
        term.fill(0.0);
        let added = lock(routed).apply(layer, Proj::Down, self.pos, &me.xn[..c.d_ff], term);
        if added {
            self.shared.term.store(0, term);
        }
        self.shared.term_added.store(added, Relaxed);
    }

    /// `x += ` the whole output of `p` (the residual add after o and down), with the routed
    /// term's where `routed` (added to the projection's output first, as the graph adds an
    /// adapter's delta).
    fn add_output(&self, p: Proj, me: &mut Local, routed: bool) {
        let n = me.x.len();
        let out = &mut me.xn[..n];
        self.shared.out[proj_index(p)].load(0, out);
        if routed && self.shared.term_added.load(Relaxed) {
            let term = &mut me.rows[..n];
            self.shared.term.load(0, term);
            for (o, t) in out.iter_mut().zip(term.iter()) {
                *o += t;
            }
        }
        for (x, o) in me.x.iter_mut().zip(out.iter()) {
            *x += o;
        }
    }

    /// RoPE on one head: llama.cpp's "normal" adjacent pairs, or half-split pairs for a
    /// checkpoint in Hugging Face's layout.
    fn rope(&self, x: &mut [f32]) {
        rope(x, self.cos, self.sin, self.plan.half_split);
    }

    /// Attention of query head `h` over the cached positions and this token's into `me.att`.
    fn attend(&self, l: usize, h: usize, me: &mut Local) {
        let c = &self.model.config;
        let dh = c.d_head;
        let new = NewRows {
            k: &me.k,
            v: &me.v,
            n: 1,
        };
        let q = &mut me.q[h * dh..(h + 1) * dh];
        let at = h / c.n_rep() * dh;
        self.cache
            .attend(l, at, q, new, &mut me.scores, &mut me.att);
    }
}

/// Positions after the cache's that a query also attends: the first `n` rows of `k` and `v`
/// (`d_kv` floats apart, like the cache's rows).
struct NewRows<'a> {
    k: &'a [f32],
    v: &'a [f32],
    n: usize,
}

impl KvStore {
    /// Attention of one query head `q` (`d_head`, its key/value head at float `at` of a row)
    /// over layer `l`'s cached positions followed by `new`'s, into `out` (`d_head`); `scores`
    /// is scratch for `len + new.n` values.
    fn attend(
        &self,
        l: usize,
        at: usize,
        q: &mut [f32],
        new: NewRows<'_>,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let (dh, dkv) = (q.len(), self.d_kv);
        let (keys, values) = (&self.k[self.filled(l)], &self.v[self.filled(l)]);
        if self.f16 {
            round_f16(q);
        }
        let scale = 1.0 / (dh as f32).sqrt();
        let len = self.len;
        let scores = &mut scores[..len + new.n];
        // This head's keys and values: `dh` floats every `dkv`, from `at` (empty before the
        // first cached position).
        fn head(m: &[f32], from: usize) -> &[f32] {
            m.get(from..).unwrap_or(&[])
        }
        attention_scores(q, head(keys, at), dkv, &mut scores[..len]);
        attention_scores(q, head(new.k, at), dkv, &mut scores[len..]);
        for s in scores.iter_mut() {
            *s *= scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        if self.f16 {
            for s in scores.iter_mut() {
                *s *= inv;
            }
            round_f16(scores);
        }
        out.fill(0.0);
        attention_mix(&scores[..len], head(values, at), dkv, out);
        attention_mix(&scores[len..], head(new.v, at), dkv, out);
        if !self.f16 {
            for o in out.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// RoPE on one head at the position of `cos` and `sin` (`d_head / 2` each): llama.cpp's
/// "normal" adjacent pairs, or half-split pairs (`half_split`) for a checkpoint in Hugging
/// Face's layout.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], half_split: bool) {
    if half_split {
        let (lo, hi) = x.split_at_mut(x.len() / 2);
        for (i, (x0, x1)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
            let (c, s, a, b) = (cos[i], sin[i], *x0, *x1);
            *x0 = a * c - b * s;
            *x1 = a * s + b * c;
        }
        return;
    }
    for (i, pair) in x.chunks_exact_mut(2).enumerate() {
        let (x0, x1) = (pair[0], pair[1]);
        let (c, s) = (cos[i], sin[i]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x0 * s + x1 * c;
    }
}

/// `out = x · rsqrt(mean(x²) + eps) · w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mean = dot(x, x) / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
        *o = x * inv * w;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn round_f16(x: &mut [f32]) {
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}
