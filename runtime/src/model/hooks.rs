//! The graph's hooks for adapters: the names of its weights ([`Proj`], [`Norm`]) and the
//! [`LinearAdapter`] trait through which LoRA, edits and full fine-tuning change them, plus the
//! dense product the weight-replacing hooks run.

use burn::tensor::{FloatDType, Tensor};

/// The linear projections of a block, as named by adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proj {
    /// Attention query (`attn_q`).
    Q,
    /// Attention key (`attn_k`).
    K,
    /// Attention value (`attn_v`).
    V,
    /// Attention output (`attn_output`).
    O,
    /// Feed-forward gate (`ffn_gate`).
    Gate,
    /// Feed-forward up (`ffn_up`).
    Up,
    /// Feed-forward down (`ffn_down`).
    Down,
}

impl Proj {
    /// All projections of a block, in graph order.
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The GGUF tensor stem (`attn_q`, ...).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }

    /// The Hugging Face / PEFT module name (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }
}

/// An RMSNorm weight of the graph, as named by full fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Norm {
    /// The norm before attention in block `i` (`blk.{i}.attn_norm`).
    Attn(usize),
    /// The norm before the feed-forward in block `i` (`blk.{i}.ffn_norm`).
    Ffn(usize),
    /// The final norm before the vocabulary projection (`output_norm`).
    Output,
}

impl Norm {
    /// The GGUF tensor name (`blk.3.attn_norm.weight`, `output_norm.weight`).
    pub fn gguf_name(self) -> String {
        match self {
            Norm::Attn(i) => format!("blk.{i}.attn_norm.weight"),
            Norm::Ffn(i) => format!("blk.{i}.ffn_norm.weight"),
            Norm::Output => "output_norm.weight".to_owned(),
        }
    }
}

/// Something that adds a trainable delta to the frozen projections (LoRA, edits, ...), or
/// replaces frozen weights with dense trainable ones (full fine-tuning).
///
/// `delta(layer, proj, x)` returns the term added to `x · Wᵀ` for that projection, or `None`
/// when it leaves the layer alone. It is called with the layer's input, `(batch, t, n_in)`.
///
/// The other methods default to `None` (the file's weights): an adapter that returns a dense
/// weight from them makes the graph use that tensor (and differentiate through it) in place of
/// the mapped one. The inference path without such an adapter is unchanged.
pub trait LinearAdapter {
    /// The additive delta for `proj` of block `layer` on input `x`, shaped `(batch, t, n_out)`.
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>>;

    /// The same delta as [`LinearAdapter::delta`] in a form the fused decode path
    /// ([`crate::model::llama::Decoder`]) runs without burn: nothing, or low-rank factors. The
    /// default, [`DecodeDelta::Opaque`], makes decoding through this adapter run the burn graph
    /// (correct, slower); an adapter that returns factors must return the function `delta`
    /// computes on a single position (the decode tests compare the two).
    fn decode_delta(&self, _layer: usize, _proj: Proj) -> DecodeDelta {
        DecodeDelta::Opaque
    }

    /// The part of [`LinearAdapter::delta`] that is no fixed function of one position's input
    /// (a memory routed by what the sequence mentioned earlier, as the gated edits are), as a
    /// [`RoutedTerm`] the fused path runs beside [`LinearAdapter::decode_delta`]'s factors: a
    /// fresh one per decoder. `None` (the default): `decode_delta` says everything. An adapter
    /// that returns one reports the rest of its terms through `decode_delta` (`None` where the
    /// routed term is all there is), and `delta` must be the sum of the two.
    fn decode_routed(&self) -> Option<Box<dyn RoutedTerm>> {
        None
    }

    /// A dense weight `(n_out, n_in)` used instead of the frozen quantized `proj` of block
    /// `layer` (`x · Wᵀ` as a dense product); [`LinearAdapter::delta`] is still added on top.
    fn dense_weight(&self, _layer: usize, _proj: Proj) -> Option<Tensor<2>> {
        None
    }

    /// An RMSNorm weight `(d_model)` used instead of the file's `norm`.
    fn norm_weight(&self, _norm: Norm) -> Option<Tensor<1>> {
        None
    }

    /// A dense token embedding `(n_vocab, d_model)` used instead of the file's for the input
    /// lookup, and for the vocabulary projection too when the model ties them.
    fn embedding(&self) -> Option<Tensor<2>> {
        None
    }

    /// A dense output projection `(n_vocab, d_model)` of an untied model.
    fn output_weight(&self) -> Option<Tensor<2>> {
        None
    }
}

/// A projection's adapter term as the fused decode path runs it: `Δy = B · (A · x)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    /// Rows of `a`, columns of `b`.
    pub rank: usize,
    /// `A`, row-major. `a`: (rank, n_in)
    pub a: Vec<f32>,
    /// `B` with any scale folded in, stored transposed, row-major. `bt`: (rank, n_out)
    pub bt: Vec<f32>,
}

impl LowRank {
    /// Both terms at once: the factors side by side (`[A₁; A₂]`, `[B₁ B₂]`), whose product is
    /// the sum of the two deltas.
    ///
    /// # Panics
    /// When the two are for different shapes.
    pub fn concat(mut self, other: &LowRank) -> LowRank {
        if self.rank == 0 {
            return other.clone();
        }
        if other.rank == 0 {
            return self;
        }
        assert_eq!(
            self.a.len() / self.rank,
            other.a.len() / other.rank,
            "LowRank::concat: different n_in"
        );
        assert_eq!(
            self.bt.len() / self.rank,
            other.bt.len() / other.rank,
            "LowRank::concat: different n_out"
        );
        self.rank += other.rank;
        self.a.extend_from_slice(&other.a);
        self.bt.extend_from_slice(&other.bt);
        self
    }
}

/// A term added to projections' outputs that depends on each position's input non-linearly and
/// on the sequence's earlier positions: the fused path's form of a routed memory (see
/// [`LinearAdapter::decode_routed`]). It holds one sequence's state.
///
/// The fused decoder ([`crate::model::llama::Decoder`]) serves routed terms on the MLP
/// down-projection ([`Proj::Down`]) only; a term that reads another projection makes it fall back
/// to the graph.
pub trait RoutedTerm: Send {
    /// Whether [`RoutedTerm::apply`] wants the input of projection `proj` of block `layer`.
    fn reads(&self, layer: usize, proj: Proj) -> bool;

    /// Positions `start..start + t` of the sequence reach projection `proj` of block `layer`
    /// with inputs `x` `(t, n_in)`: adds the term to `out` `(t, n_out)`, and returns whether it
    /// added anything (`false`: `out` is untouched). Called for every `(layer, proj)` that
    /// [`RoutedTerm::reads`] names, in layer order, each call's positions following the previous
    /// call's; a call at `start` 0 begins a new sequence.
    fn apply(&mut self, layer: usize, proj: Proj, start: usize, x: &[f32], out: &mut [f32])
    -> bool;
}

/// What an adapter adds to one projection, as [`LinearAdapter::decode_delta`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeDelta {
    /// Nothing: the frozen projection as it is.
    None,
    /// `B · (A · x)`.
    LowRank(LowRank),
    /// A term the fused path cannot express (non-linear in `x`, a dense replacement weight, a
    /// training-mode dropout, ...): decoding runs the burn graph.
    Opaque,
}

impl DecodeDelta {
    /// The sum of two terms (of two stacked adapters).
    pub fn plus(self, other: DecodeDelta) -> DecodeDelta {
        match (self, other) {
            (DecodeDelta::Opaque, _) | (_, DecodeDelta::Opaque) => DecodeDelta::Opaque,
            (DecodeDelta::None, d) | (d, DecodeDelta::None) => d,
            (DecodeDelta::LowRank(a), DecodeDelta::LowRank(b)) => {
                DecodeDelta::LowRank(a.concat(&b))
            }
        }
    }
}

/// `x · Wᵀ` for a dense `w` `(n_out, n_in)` over the last dimension of `x` `(b, t, n_in)`.
///
/// Mixed precision: when `w` is in a narrower float type than `x` (a bf16 or f16 copy of an f32
/// master weight), the product runs in `w`'s type and the result comes back in `x`'s, so the
/// rest of the graph (norms, attention, loss) stays f32. Under autodiff the casts carry the
/// gradient back to the master in its own type.
///
/// # Panics
/// When the widths do not match (an adapter built for another model).
pub(crate) fn dense_linear(x: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    let [b, t, n_in] = x.dims();
    let [n_out, w_in] = w.dims();
    assert_eq!(
        n_in, w_in,
        "dense weight ({n_out}, {w_in}) on input width {n_in}"
    );
    let (x_dtype, w_dtype) = (x.dtype(), w.dtype());
    let x = x.reshape([b * t, n_in]);
    let y = if x_dtype == w_dtype {
        x.matmul(w.transpose())
    } else {
        x.cast(FloatDType::from(w_dtype))
            .matmul(w.transpose())
            .cast(FloatDType::from(x_dtype))
    };
    y.reshape([b, t, n_out])
}
