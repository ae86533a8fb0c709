//! Prefill on the fused path: a prompt's m tokens through the decoder at once.
//!
//! The team of the model's threads splits the prompt's rows (cut at the kernels' 4-row tiles):
//! each share embeds its rows and runs their norms, 8-bit activation quantization, products
//! (`matmul_rows` over all of a matrix's rows for its activation rows, the tile kernels that
//! [`CpuContext::qmatmul`](crate::cpu::CpuContext::qmatmul) splits the same way from 32 rows
//! on), adapter terms, RoPE, SiLU and residual adds; no other share needs those rows until
//! attention. Attention needs every row's keys and values, so the shares meet twice a block:
//! after q, k and v (queries, keys and values exchanged), and after attention, which is split
//! into (head, row) units of about equal cost (a row attends to every position before it). The
//! vocabulary projection runs for the last row only, split by vocabulary rows as in decode.
//!
//! Several decoders' sequences run as one call ([`Decoder::prefill_batch`]): their rows are
//! stacked, every product reads each weight row once for all of them, and a row attends to its
//! own sequence's cache and rows only. One token per sequence is a batched decoding step.
//! A routed term ([`RoutedTerm`], the gated edit memory) reads every row's down-projection
//! input at the blocks it names: the shares exchange those rows, share 0 runs the term on all of
//! them (one call, as the graph makes it), and each share adds its rows' part — two more
//! barriers at those blocks only.
//!
//! Every row's numbers are the same whichever share computes them (the tile kernels give each
//! output the one-row dot product bit for bit; norms and adapter terms run per row in a fixed
//! order), so the logits do not depend on the number of threads. The keys and values go to the
//! decoder's own cache, and [`Decoder::step`] continues from there.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use engram_kernels::{
    GgmlType, INTERLEAVE_ROWS, Interleaved, QMatrix, activation_bytes, matmul_rows,
    matvec_interleaved, quantize_activations,
};

use super::{
    Block, Decoder, KvStore, LayerPlan, Llama, Local, NewRows, Plan, ROW_ALIGN, SharedF32, lock,
    rms_norm, rope, round_f16, silu,
};
use crate::backend::QWeight;
use crate::cpu::Team;
use crate::model::hooks::{Proj, RoutedTerm};
use crate::model::kv_cache::ContextFull;

/// Activation rows a share's part of the prompt is cut at: the tile kernels' 4 rows.
const ROW_TILE: usize = 4;

/// Bytes of weight rows the interleaved products take at a time: they stay in L1 (48 KiB on
/// the machine measured) while every activation row of the share passes over them.
const CHUNK_BYTES: usize = 16 * 1024;

/// Work of one attention unit besides its positions (loading the query, the softmax's setup,
/// storing the output), in positions: only balances the shares' parts.
const UNIT_OVERHEAD: u64 = 16;

/// What a prefill's shares exchange and keep, grown to the longest prompt run so far (never
/// shrunk: a decoder that prefilled m tokens once runs m again without allocating).
#[derive(Default)]
pub(super) struct Buffers {
    rows: usize,
    q: SharedF32,      // (rows, n_head · d_head) queries after RoPE
    k: SharedF32,      // (rows, d_kv) keys after RoPE, rounded as the cache holds them
    v: SharedF32,      // (rows, d_kv)
    att: SharedF32,    // (rows, n_head · d_head) attention outputs
    lasts: SharedF32,  // (sequences, d_model) each sequence's last row's residual stream
    logits: SharedF32, // (sequences, n_vocab)
    /// Every row's down-projection input and the routed term's output there, at a block the
    /// routed term reads (empty without one).
    keys: SharedF32, // (rows, d_ff)
    terms: SharedF32,  // (rows, d_model)
    term_added: AtomicBool,
    cos: Vec<f32>, // (rows, d_head / 2)
    sin: Vec<f32>, // (rows, d_head / 2)
    locals: Vec<Mutex<RowsLocal>>,
}

/// One share's buffers for its rows of the prompt.
#[derive(Default)]
struct RowsLocal {
    x: Vec<f32>,  // (part, d_model) the residual stream of this share's rows
    xn: Vec<f32>, // (part, max n_in) the current product's f32 input
    xq: Vec<u8>,  // the current product's quantized input
    xq_ty: Option<GgmlType>,
    out: Vec<f32>,  // (part, max n_out) a product's output
    gate: Vec<f32>, // (part, d_ff)
    h: Vec<f32>,    // (part, max rank) an adapter's A · x
    /// Share 0: every row's down-projection input at a routed block; each share: its rows'
    /// routed term (share 0: every row's).
    keys: Vec<f32>, // (rows, d_ff) on share 0
    term: Vec<f32>, // (rows or part, d_model)
    /// The sequences' last rows, normed, and this share's vocabulary rows of their logits.
    lasts: Vec<f32>, // (sequences, d_model)
    lastn: Vec<f32>, // (sequences, d_model)
    logits: Vec<f32>, // (sequences, vocabulary part)
    /// Every row's keys and values of a layer, `(layers, rows, d_kv)`: share 0 keeps every
    /// layer's (they go to the cache after the run), the others one layer's.
    k: Vec<f32>,
    v: Vec<f32>,
}

fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl Buffers {
    /// Grows the buffers for `m` rows of `seqs` sequences on `threads` shares.
    fn reserve(&mut self, model: &Llama, plan: &Plan, m: usize, seqs: usize, threads: usize) {
        let c = &model.config;
        let (d, dkv, nq, half) = (c.d_model, c.d_kv(), c.n_head * c.d_head, c.d_head / 2);
        let routed = plan.layers.iter().any(|l| l.routed_down);
        if m > self.rows || (routed && self.keys.0.len() < m * c.d_ff) {
            let rows = self.rows.max(m);
            self.q = SharedF32::new(rows * nq);
            self.k = SharedF32::new(rows * dkv);
            self.v = SharedF32::new(rows * dkv);
            self.att = SharedF32::new(rows * nq);
            if routed {
                self.keys = SharedF32::new(rows * c.d_ff);
                self.terms = SharedF32::new(rows * d);
            }
            self.rows = rows;
        }
        if self.lasts.0.len() < seqs * d {
            self.lasts = SharedF32::new(seqs * d);
            self.logits = SharedF32::new(seqs * c.n_vocab);
        }
        grow(&mut self.cos, m * half);
        grow(&mut self.sin, m * half);
        while self.locals.len() < threads {
            self.locals.push(Mutex::default());
        }
        let n_out = |p: Proj| model.blocks[0].proj(p).n_out();
        let max_out = Proj::ALL.iter().map(|&p| n_out(p)).max().unwrap_or(0);
        let max_in = d.max(c.d_ff).max(nq);
        let max_rank = plan
            .layers
            .iter()
            .flat_map(|l| l.deltas.iter().flatten())
            .map(|lr| lr.rank)
            .max()
            .unwrap_or(0);
        let units = m.div_ceil(ROW_TILE);
        let part = units.div_ceil(threads.min(units).max(1)) * ROW_TILE;
        for (t, local) in self.locals.iter_mut().enumerate() {
            let r = local.get_mut().unwrap_or_else(|e| e.into_inner());
            grow(&mut r.x, part * d);
            grow(&mut r.xn, part * max_in);
            grow(&mut r.out, part * max_out);
            grow(&mut r.gate, part * c.d_ff);
            grow(&mut r.h, part * max_rank);
            if routed {
                let all = if t == 0 { m } else { part };
                grow(&mut r.term, all * d);
                if t == 0 {
                    grow(&mut r.keys, m * c.d_ff);
                }
            }
            grow(&mut r.lasts, seqs * d);
            grow(&mut r.lastn, seqs * d);
            grow(
                &mut r.logits,
                seqs * (c.n_vocab.div_ceil(threads) + ROW_ALIGN),
            );
            let layers = if t == 0 { c.n_layer } else { 1 };
            grow(&mut r.k, layers * m * dkv);
            grow(&mut r.v, layers * m * dkv);
        }
    }
}

impl<'m> Decoder<'m> {
    /// Runs the prompt `tokens` at the next positions in one pass (the threads split its rows;
    /// see the module docs), appends their keys and values to the cache and returns the last
    /// token's logits `(n_vocab)`. Equal to [`Decoder::step`] on each token in turn within
    /// [`DECODE_TOLERANCE`](super::DECODE_TOLERANCE) (the same sums but for the 8-bit products'
    /// row tiles and the attention's order), and to the graph's prefill likewise.
    ///
    /// # Panics
    /// When `tokens` is empty or holds a token outside the vocabulary (callers validate user
    /// input).
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], ContextFull> {
        Self::prefill_batch(std::slice::from_mut(self), &[tokens])?;
        Ok(&self.logits)
    }

    /// [`Decoder::prefill`] of `prompts[i]` on `decoders[i]`, for every `i`, as one pass: the
    /// rows of all of them go through each product together (each weight row is read once for
    /// all), and each row attends to its own sequence only. Each decoder's logits are then
    /// [`Decoder::logits`], bit for bit what its own `prefill` gives (every row's numbers are
    /// the same whichever rows it runs with). One token per decoder is a batched decoding step.
    ///
    /// # Errors
    /// [`ContextFull`] when a prompt does not fit its decoder's cache (nothing is run).
    ///
    /// # Panics
    /// When the counts differ, a prompt is empty or holds a token outside the vocabulary, or the
    /// decoders are not of one model with one capacity (make them with the same adapter too:
    /// the first's adapter factors serve all).
    pub fn prefill_batch(
        decoders: &mut [Decoder<'m>],
        prompts: &[&[u32]],
    ) -> Result<(), ContextFull> {
        assert_eq!(decoders.len(), prompts.len(), "one prompt per decoder");
        let Some(first) = decoders.first() else {
            return Ok(());
        };
        let model = first.model;
        let c = &model.config;
        let capacity = first.cache.capacity;
        for (dec, tokens) in decoders.iter().zip(prompts) {
            assert!(
                std::ptr::eq(dec.model, model) && dec.cache.capacity == capacity,
                "Decoder::prefill_batch: decoders of one model and capacity"
            );
            assert!(!tokens.is_empty(), "Decoder::prefill: no tokens");
            if dec.cache.len + tokens.len() > capacity {
                return Err(ContextFull {
                    used: dec.cache.len,
                    requested: tokens.len(),
                    capacity,
                });
            }
            if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
                panic!("token {t} out of range ({} rows)", c.n_vocab);
            }
        }
        let tokens: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let m = tokens.len();
        let mut ranges = Vec::with_capacity(prompts.len());
        let mut seq_of = Vec::with_capacity(m);
        for (s, p) in prompts.iter().enumerate() {
            let start = seq_of.len();
            seq_of.extend(std::iter::repeat_n(s, p.len()));
            ranges.push(start..seq_of.len());
        }
        // Each row's position in its own sequence.
        let positions: Vec<usize> = (0..m)
            .map(|i| decoders[seq_of[i]].cache.len + i - ranges[seq_of[i]].start)
            .collect();
        let threads = first.threads.max.min(m.div_ceil(ROW_TILE));
        let first = &mut decoders[0];
        first
            .prefill
            .reserve(model, &first.plan, m, prompts.len(), threads);
        let half = c.d_head / 2;
        let bufs = &mut first.prefill;
        for ((cos, sin), &pos) in bufs
            .cos
            .chunks_exact_mut(half)
            .zip(bufs.sin.chunks_exact_mut(half))
            .zip(&positions)
        {
            for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&first.plan.inv_freq) {
                let theta = pos as f64 * f;
                (*c, *s) = (theta.cos() as f32, theta.sin() as f32);
            }
        }
        {
            let seqs: Vec<SeqRows<'_>> = decoders
                .iter()
                .zip(&ranges)
                .map(|(dec, rows)| SeqRows {
                    cache: &dec.cache,
                    rows: rows.clone(),
                    routed: dec.routed.as_ref(),
                })
                .collect();
            let first = &decoders[0];
            let ctx = RowsCtx {
                model,
                plan: &first.plan,
                bufs: &first.prefill,
                tokens: &tokens,
                seqs: &seqs,
                seq_of: &seq_of,
            };
            let (locals, rows) = (&first.locals, &first.prefill.locals);
            model.output.cpu().team_of(threads, &|team| {
                let i = team.index();
                ctx.run(team, &mut lock(&locals[i]), &mut lock(&rows[i]));
            });
        }
        // Keys and values to each sequence's cache, logits to each decoder.
        let (k, v, logits) = {
            let first = &mut decoders[0];
            let mut f = lock(&first.prefill.locals[0]);
            (
                std::mem::take(&mut f.k),
                std::mem::take(&mut f.v),
                std::mem::take(&mut first.prefill.logits),
            )
        };
        let n_vocab = c.n_vocab;
        for (s, (dec, r)) in decoders.iter_mut().zip(&ranges).enumerate() {
            let kv = &mut dec.cache;
            let (pos0, n) = (kv.len, r.len() * kv.d_kv);
            for l in 0..c.n_layer {
                let at = (l * kv.capacity + pos0) * kv.d_kv;
                let from = (l * m + r.start) * kv.d_kv;
                kv.k[at..at + n].copy_from_slice(&k[from..from + n]);
                kv.v[at..at + n].copy_from_slice(&v[from..from + n]);
            }
            kv.len += r.len();
            logits.load(s * n_vocab, &mut dec.logits);
        }
        let first = &mut decoders[0];
        first.prefill.logits = logits;
        let mut f = lock(&first.prefill.locals[0]);
        (f.k, f.v) = (k, v);
        Ok(())
    }

    /// The logits `(n_vocab)` of the last position run ([`Decoder::step`], [`Decoder::prefill`]
    /// or [`Decoder::prefill_batch`]).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// One sequence of a prefill: its decoder's cache and routed term, and its rows of the call.
struct SeqRows<'a> {
    cache: &'a KvStore,
    rows: Range<usize>,
    routed: Option<&'a Mutex<Box<dyn RoutedTerm>>>,
}

/// Everything a prefill's shares read.
struct RowsCtx<'a> {
    model: &'a Llama,
    plan: &'a Plan,
    bufs: &'a Buffers,
    tokens: &'a [u32],
    seqs: &'a [SeqRows<'a>],
    seq_of: &'a [usize], // per row: its sequence
}

impl RowsCtx<'_> {
    fn run(&self, team: &Team<'_>, me: &mut Local, r: &mut RowsLocal) {
        let c = &self.model.config;
        let (d, dh, dkv, dff) = (c.d_model, c.d_head, c.d_kv(), c.d_ff);
        let nq = c.n_head * dh;
        let half = dh / 2;
        let b = self.bufs;
        let m = self.tokens.len();
        let rows = team.part(m, ROW_TILE);
        let n = rows.len();
        self.model
            .embedding
            .dequantize_rows(&self.tokens[rows.clone()], &mut r.x[..n * d]);
        for (l, block) in self.model.blocks.iter().enumerate() {
            let lp = &self.plan.layers[l];
            // q, k and v of this share's rows, after RoPE, to the exchange.
            self.norm_rows(r, &lp.attn_norm, n);
            r.xq_ty = None;
            for (p, out) in [(Proj::Q, &b.q), (Proj::K, &b.k), (Proj::V, &b.v)] {
                let n_out = block.proj(p).n_out();
                self.rows_product(r, block, lp, p, n, d);
                for (i, row) in r.out[..n * n_out].chunks_exact_mut(n_out).enumerate() {
                    let at = rows.start + i;
                    if p != Proj::V {
                        let (cos, sin) = (&b.cos[at * half..][..half], &b.sin[at * half..][..half]);
                        for head in row.chunks_exact_mut(dh) {
                            rope(head, cos, sin, self.plan.half_split);
                        }
                    }
                    if p != Proj::Q && self.plan.f16 {
                        round_f16(row);
                    }
                    out.store(at * n_out, row);
                }
            }
            team.sync();
            // Attention, by (head, row) units over every row's keys and values.
            let slot = if team.index() == 0 { l } else { 0 };
            let (keys, values) = (
                &mut r.k[slot * m * dkv..][..m * dkv],
                &mut r.v[slot * m * dkv..][..m * dkv],
            );
            b.k.load(0, keys);
            b.v.load(0, values);
            let (keys, values) = (&*keys, &*values);
            // Row i attends to its sequence's cache and its sequence's rows up to itself.
            let seq = |i: usize| &self.seqs[self.seq_of[i]];
            let cost = |i: usize| {
                let s = seq(i);
                (s.cache.len + i - s.rows.start + 1) as u64 + UNIT_OVERHEAD
            };
            for_attention_units(team, c.n_head, m, cost, |h, i| {
                let q = &mut me.q[..dh];
                b.q.load(i * nq + h * dh, q);
                let s = seq(i);
                let from = s.rows.start * dkv;
                let new = NewRows {
                    k: &keys[from..],
                    v: &values[from..],
                    n: i - s.rows.start + 1,
                };
                let at = h / c.n_rep() * dh;
                s.cache.attend(l, at, q, new, &mut me.scores, &mut me.att);
                b.att.store(i * nq + h * dh, &me.att);
            });
            team.sync();
            // o, the residual, the feed-forward and its residual on this share's rows: no other
            // share reads them before the next block's attention.
            b.att.load(rows.start * nq, &mut r.xn[..n * nq]);
            r.xq_ty = None;
            self.rows_product(r, block, lp, Proj::O, n, nq);
            add(&mut r.x[..n * d], &r.out[..n * d]);
            self.norm_rows(r, &lp.ffn_norm, n);
            r.xq_ty = None;
            self.rows_product(r, block, lp, Proj::Gate, n, d);
            r.gate[..n * dff].copy_from_slice(&r.out[..n * dff]);
            self.rows_product(r, block, lp, Proj::Up, n, d);
            for ((x, g), u) in r.xn[..n * dff]
                .iter_mut()
                .zip(&r.gate[..n * dff])
                .zip(&r.out[..n * dff])
            {
                *x = silu(*g) * u;
            }
            r.xq_ty = None;
            self.rows_product(r, block, lp, Proj::Down, n, dff);
            if lp.routed_down {
                self.routed_rows(team, l, rows.clone(), r);
            }
            add(&mut r.x[..n * d], &r.out[..n * d]);
        }
        // The vocabulary projection of each sequence's last row, by vocabulary rows on every
        // share.
        for (s, seq) in self.seqs.iter().enumerate() {
            let last = seq.rows.end - 1;
            if rows.contains(&last) {
                b.lasts.store(s * d, &r.x[(last - rows.start) * d..][..d]);
            }
        }
        team.sync();
        self.vocabulary_rows(team, r);
    }

    /// Every share's vocabulary rows of the logits of each sequence's last row (in
    /// `bufs.lasts`), to `bufs.logits`: the single row of decode's `vocabulary` per sequence,
    /// bit for bit.
    fn vocabulary_rows(&self, team: &Team<'_>, r: &mut RowsLocal) {
        let c = &self.model.config;
        let (d, ns, n_vocab) = (c.d_model, self.seqs.len(), c.n_vocab);
        let b = self.bufs;
        b.lasts.load(0, &mut r.lasts[..ns * d]);
        for (x, xn) in r.lasts[..ns * d]
            .chunks_exact(d)
            .zip(r.lastn[..ns * d].chunks_exact_mut(d))
        {
            rms_norm(x, &self.plan.output_norm, c.rms_eps, xn);
        }
        let w = &self.model.output;
        let bytes = activation_bytes(w.ty(), ns * d);
        grow(&mut r.xq, bytes);
        quantize_activations(w.ty(), &r.lastn[..ns * d], &mut r.xq[..bytes]);
        r.xq_ty = None;
        let rows = team.part(w.n_out(), ROW_ALIGN);
        let n = rows.len();
        let out = &mut r.logits[..ns * n];
        product_rows(w, rows.clone(), &r.xq[..bytes], ns, out);
        for (s, row) in out.chunks_exact(n.max(1)).enumerate().take(ns) {
            b.logits.store(s * n_vocab + rows.start, row);
        }
    }

    /// The routed term of block `layer`'s down-projection: this share's rows of its input
    /// (`r.xn`) to the exchange, share 0 runs the term on every row, and each share adds its
    /// rows' part to the product's output `r.out`.
    fn routed_rows(&self, team: &Team<'_>, layer: usize, rows: Range<usize>, r: &mut RowsLocal) {
        let c = &self.model.config;
        let (d, dff, m, n) = (c.d_model, c.d_ff, self.tokens.len(), rows.len());
        let b = self.bufs;
        b.keys.store(rows.start * dff, &r.xn[..n * dff]);
        team.sync();
        if team.index() == 0 {
            let (keys, term) = (&mut r.keys[..m * dff], &mut r.term[..m * d]);
            b.keys.load(0, keys);
            term.fill(0.0);
            let mut added = false;
            for seq in self.seqs {
                let Some(routed) = seq.routed else {
                    continue;
                };
                let rows = seq.rows.clone();
                added |= lock(routed).apply(
                    layer,
                    Proj::Down,
                    seq.cache.len,
                    &keys[rows.start * dff..rows.end * dff],
                    &mut term[rows.start * d..rows.end * d],
                );
            }
            if added {
                b.terms.store(0, term);
            }
            b.term_added.store(added, Relaxed);
        }
        team.sync();
        if b.term_added.load(Relaxed) {
            let term = &mut r.term[..n * d];
            b.terms.load(rows.start * d, term);
            add(&mut r.out[..n * d], term);
        }
    }

    /// `r.xn[i] = rms_norm(r.x[i]) · w` for this share's `n` rows.
    fn norm_rows(&self, r: &mut RowsLocal, w: &[f32], n: usize) {
        let c = &self.model.config;
        let d = c.d_model;
        for (x, xn) in r.x[..n * d]
            .chunks_exact(d)
            .zip(r.xn[..n * d].chunks_exact_mut(d))
        {
            rms_norm(x, w, c.rms_eps, xn);
        }
    }

    /// Projection `p` (adapter term included) of this share's `n` rows of `r.xn` (`n × n_in`)
    /// into `r.out` (`n × n_out`), quantizing `r.xn` first unless it already is for `p`'s
    /// type. Each row's adapter term is `Σ_j h_j · B_j` in rank order, as in decode.
    fn rows_product(
        &self,
        r: &mut RowsLocal,
        block: &Block,
        lp: &LayerPlan,
        p: Proj,
        n: usize,
        n_in: usize,
    ) {
        let w = block.proj(p);
        let n_out = w.n_out();
        let x = &r.xn[..n * n_in];
        if r.xq_ty != Some(w.ty()) {
            let bytes = activation_bytes(w.ty(), n * n_in);
            grow(&mut r.xq, bytes);
            quantize_activations(w.ty(), x, &mut r.xq[..bytes]);
            r.xq_ty = Some(w.ty());
        }
        let out = &mut r.out[..n * n_out];
        let xq = &r.xq[..activation_bytes(w.ty(), n * n_in)];
        match w.interleaved() {
            Some(iw) if iw.rows() == n_out => {
                interleaved_rows(&iw, w.matrix().row_bytes(), xq, n, out);
            }
            _ => matmul_rows(&w.matrix(), 0..n_out, xq, n, out),
        }
        let Some(lr) = lp.delta(p) else {
            return;
        };
        let a = QMatrix::new(GgmlType::F32, bytemuck::cast_slice(&lr.a), lr.rank, n_in)
            .expect("factor shapes checked in Plan::new");
        let h = &mut r.h[..n * lr.rank];
        matmul_rows(&a, 0..lr.rank, bytemuck::cast_slice(x), n, h);
        for (out, h) in out.chunks_exact_mut(n_out).zip(h.chunks_exact(lr.rank)) {
            for (&hj, b) in h.iter().zip(lr.bt.chunks_exact(n_out)) {
                for (o, &bj) in out.iter_mut().zip(b) {
                    *o += hj * bj;
                }
            }
        }
    }
}

/// `out = x · Wᵀ` (`n × n_out`) on the interleaved copy of all of `W`'s rows, `x` the `n`
/// quantized activation rows: the one-row kernel for each activation row, over chunks of weight
/// rows small enough to stay in L1 while every activation row passes. Each output is the
/// `_ref` dot product bit for bit, as in decode.
fn interleaved_rows(iw: &Interleaved<'_>, row_bytes: usize, xq: &[u8], n: usize, out: &mut [f32]) {
    let n_out = iw.rows();
    let x_rb = xq.len() / n;
    let chunk = (CHUNK_BYTES / row_bytes.max(1) / INTERLEAVE_ROWS).max(1) * INTERLEAVE_ROWS;
    let mut start = 0;
    while start < n_out {
        let end = (start + chunk).min(n_out);
        for (i, out) in out.chunks_exact_mut(n_out).enumerate() {
            let x = &xq[i * x_rb..(i + 1) * x_rb];
            matvec_interleaved(iw, start..end, x, &mut out[start..end]);
        }
        start = end;
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// Calls `f(head, row)` for this share's attention units: the `n_head × m` units in head-major
/// order, cut into the team's consecutive parts of about equal cost (`cost(row)`: a row attends
/// to every position before it in its sequence), so the causal mask's growing rows do not leave
/// one share the long ones.
fn for_attention_units(
    team: &Team<'_>,
    n_head: usize,
    m: usize,
    cost: impl Fn(usize) -> u64,
    mut f: impl FnMut(usize, usize),
) {
    let per_head: u64 = (0..m).map(&cost).sum();
    let total = per_head * n_head as u64;
    let (t, size) = (team.index() as u64, team.size() as u64);
    let mine: Range<u64> = total * t / size..total * (t + 1) / size;
    // Skip whole heads before this share's part.
    let first = (mine.start / per_head.max(1)) as usize;
    let mut at = first as u64 * per_head;
    for h in first..n_head {
        for i in 0..m {
            if at >= mine.end {
                return;
            }
            if at >= mine.start {
                f(h, i);
            }
            at += cost(i);
        }
    }
}

/// `out = x · Wᵀ` for weight rows `rows` of `w` and `m` quantized activation rows `xq`, `out`
/// row-major `m × rows.len()`: as decode's `product` computes one row (the interleaved copy where
/// it covers whole groups, the ggml rows after), bit for bit, over chunks of weight rows that
/// stay in L1 while every activation row passes.
fn product_rows(w: &QWeight, rows: Range<usize>, xq: &[u8], m: usize, out: &mut [f32]) {
    let n = rows.len();
    if n == 0 || m == 0 {
        return;
    }
    let x_rb = xq.len() / m.max(1);
    let split = match w.interleaved() {
        Some(iw) if rows.start.is_multiple_of(ROW_ALIGN) => {
            let end = rows.end.min(iw.rows()).max(rows.start);
            let end = end - (end - rows.start) % ROW_ALIGN;
            let row_bytes = w.matrix().row_bytes();
            let chunk = (CHUNK_BYTES / row_bytes.max(1) / INTERLEAVE_ROWS).max(1) * INTERLEAVE_ROWS;
            let mut start = rows.start;
            while start < end {
                let stop = (start + chunk).min(end);
                for (i, out) in out.chunks_exact_mut(n).enumerate() {
                    let x = &xq[i * x_rb..(i + 1) * x_rb];
                    let o = &mut out[start - rows.start..stop - rows.start];
                    matvec_interleaved(&iw, start..stop, x, o);
                }
                start = stop;
            }
            end
        }
        _ => rows.start,
    };
    if split < rows.end {
        let k = rows.end - split;
        let mut rest = vec![0f32; m * k];
        matmul_rows(&w.matrix(), split..rows.end, xq, m, &mut rest);
        for (out, rest) in out.chunks_exact_mut(n).zip(rest.chunks_exact(k)) {
            out[split - rows.start..].copy_from_slice(rest);
        }
    }
}
