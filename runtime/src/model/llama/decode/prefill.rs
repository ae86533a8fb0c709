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
//! Every row's numbers are the same whichever share computes them (the tile kernels give each
//! output the one-row dot product bit for bit; norms and adapter terms run per row in a fixed
//! order), so the logits do not depend on the number of threads. The keys and values go to the
//! decoder's own cache, and [`Decoder::step`] continues from there.

use std::ops::Range;
use std::sync::Mutex;

use engram_kernels::{
    GgmlType, INTERLEAVE_ROWS, Interleaved, QMatrix, activation_bytes, matmul_rows,
    matvec_interleaved, quantize_activations,
};

use super::{
    Block, Decoder, KvStore, LayerPlan, Llama, Local, NewRows, Plan, Shared, SharedF32, lock,
    rms_norm, rope, round_f16, silu, vocabulary,
};
use crate::cpu::Team;
use crate::model::hooks::Proj;
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
    q: SharedF32,    // (rows, n_head · d_head) queries after RoPE
    k: SharedF32,    // (rows, d_kv) keys after RoPE, rounded as the cache holds them
    v: SharedF32,    // (rows, d_kv)
    att: SharedF32,  // (rows, n_head · d_head) attention outputs
    last: SharedF32, // (d_model) the last row's residual stream
    cos: Vec<f32>,   // (rows, d_head / 2)
    sin: Vec<f32>,   // (rows, d_head / 2)
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
    /// Grows the buffers for `m` rows on `threads` shares.
    fn reserve(&mut self, model: &Llama, plan: &Plan, m: usize, threads: usize) {
        let c = &model.config;
        let (d, dkv, nq, half) = (c.d_model, c.d_kv(), c.n_head * c.d_head, c.d_head / 2);
        if m > self.rows {
            self.q = SharedF32::new(m * nq);
            self.k = SharedF32::new(m * dkv);
            self.v = SharedF32::new(m * dkv);
            self.att = SharedF32::new(m * nq);
            self.rows = m;
        }
        if self.last.0.len() < d {
            self.last = SharedF32::new(d);
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
            let layers = if t == 0 { c.n_layer } else { 1 };
            grow(&mut r.k, layers * m * dkv);
            grow(&mut r.v, layers * m * dkv);
        }
    }
}

impl Decoder<'_> {
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
        let c = &self.model.config;
        let (m, pos0) = (tokens.len(), self.cache.len);
        assert!(m > 0, "Decoder::prefill: no tokens");
        if pos0 + m > self.cache.capacity {
            return Err(ContextFull {
                used: pos0,
                requested: m,
                capacity: self.cache.capacity,
            });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            panic!("token {t} out of range ({} rows)", c.n_vocab);
        }
        let threads = self.threads.max.min(m.div_ceil(ROW_TILE));
        self.prefill.reserve(self.model, &self.plan, m, threads);
        let half = c.d_head / 2;
        for (i, (cos, sin)) in self
            .prefill
            .cos
            .chunks_exact_mut(half)
            .zip(self.prefill.sin.chunks_exact_mut(half))
            .take(m)
            .enumerate()
        {
            for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.plan.inv_freq) {
                let theta = (pos0 + i) as f64 * f;
                (*c, *s) = (theta.cos() as f32, theta.sin() as f32);
            }
        }
        let ctx = RowsCtx {
            model: self.model,
            plan: &self.plan,
            cache: &self.cache,
            shared: &self.shared,
            bufs: &self.prefill,
            tokens,
        };
        let (locals, rows) = (&self.locals, &self.prefill.locals);
        self.model.output.cpu().team_of(threads, &|team| {
            let i = team.index();
            ctx.run(team, &mut lock(&locals[i]), &mut lock(&rows[i]));
        });
        let first = lock(&self.prefill.locals[0]);
        let kv = &mut self.cache;
        let n = m * kv.d_kv;
        for l in 0..c.n_layer {
            let at = (l * kv.capacity + pos0) * kv.d_kv;
            kv.k[at..at + n].copy_from_slice(&first.k[l * n..(l + 1) * n]);
            kv.v[at..at + n].copy_from_slice(&first.v[l * n..(l + 1) * n]);
        }
        kv.len += m;
        self.logits.copy_from_slice(&lock(&self.locals[0]).logits);
        Ok(&self.logits)
    }
}

/// Everything a prefill's shares read.
struct RowsCtx<'a> {
    model: &'a Llama,
    plan: &'a Plan,
    cache: &'a KvStore,
    shared: &'a Shared,
    bufs: &'a Buffers,
    tokens: &'a [u32],
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
            for_attention_units(team, c.n_head, m, self.cache.len, |h, i| {
                let q = &mut me.q[..dh];
                b.q.load(i * nq + h * dh, q);
                let new = NewRows {
                    k: keys,
                    v: values,
                    n: i + 1,
                };
                let at = h / c.n_rep() * dh;
                self.cache
                    .attend(l, at, q, new, &mut me.scores, &mut me.att);
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
            add(&mut r.x[..n * d], &r.out[..n * d]);
        }
        // The vocabulary projection of the last row, by vocabulary rows on every share.
        if rows.end == m {
            b.last.store(0, &r.x[(n - 1) * d..n * d]);
        }
        team.sync();
        b.last.load(0, &mut me.x);
        vocabulary(self.model, self.plan, self.shared, team, me);
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
/// order, cut into the team's consecutive parts of about equal cost (row `i` attends
/// `cached + i + 1` positions), so the causal mask's growing rows do not leave one share the
/// long ones.
fn for_attention_units(
    team: &Team<'_>,
    n_head: usize,
    m: usize,
    cached: usize,
    mut f: impl FnMut(usize, usize),
) {
    let cost = |i: usize| (cached + i + 1) as u64 + UNIT_OVERHEAD;
    let per_head: u64 = (0..m).map(cost).sum();
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
