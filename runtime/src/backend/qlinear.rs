//! The frozen quantized linear layer as a burn backend extension.
//!
//! `quant_linear(x, W) = x · Wᵀ` where `W` stays in the memory-mapped GGUF file as ggml blocks and
//! is read by engram's kernels; it is never dequantized whole, and copied only for the fused
//! decoder's one-row products ([`QWeight::interleaved`], the same bytes rearranged). Under autodiff its
//! backward pass gives the input gradient `dx = dy · W` through the same quantized weights (the
//! transposed kernel), so gradients reach every adapter below a frozen layer. `W` itself has no
//! gradient: it is frozen by construction.

use std::fmt;
use std::sync::{Arc, OnceLock};

#[cfg(feature = "flex")]
use burn::backend::Flex;
#[cfg(feature = "ndarray")]
use burn::backend::NdArray;
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;
use engram_kernels::{GgmlType, Interleaved, QMatrix};

use crate::cpu::CpuContext;
use crate::io::mmap::HugePageBuffer;
use crate::model_file::TensorView;

/// A frozen quantized weight matrix of `n_out` rows × `n_in` columns (ggml: `ne0 = n_in`), read in
/// place from the mapped model file. Cheap to clone (shared).
#[derive(Clone)]
pub struct QWeight {
    inner: Arc<Inner>,
}

struct Inner {
    view: TensorView,
    n_out: usize, // rows of W
    n_in: usize,  // weights per row
    cpu: Arc<CpuContext>,
    f32_activations: bool,
    /// W's whole groups of 16 rows in the interleaved layout of the one-row product (decode),
    /// made at the first [`QWeight::interleaved`] or [`QWeight::interleave_together`] and kept;
    /// `None` where this CPU has no vector kernel for the layout.
    interleaved: OnceLock<Option<InterleavedCopy>>,
    /// The blocks uploaded to each GPU device this weight has run on (uploaded once, kept).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    device_blocks: super::device_blocks::DeviceBlocks,
}

/// One weight's interleaved rows: `len` bytes at `start` (a multiple of 64) of a buffer that may
/// hold other weights' rows too ([`QWeight::interleave_together`]).
struct InterleavedCopy {
    buf: Arc<HugePageBuffer>,
    start: usize,
    len: usize,
}

impl fmt::Debug for QWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QWeight")
            .field("name", &self.inner.view.name())
            .field("ty", &self.ty())
            .field("n_out", &self.inner.n_out)
            .field("n_in", &self.inner.n_in)
            .finish()
    }
}

impl QWeight {
    /// Wraps a 2-D tensor of the model file; `cpu` runs its kernels.
    ///
    /// # Panics
    /// When the view is not a 2-D matrix of whole rows of a weight type (the model loader checks
    /// shapes before).
    pub fn new(view: TensorView, cpu: Arc<CpuContext>) -> Self {
        let dims = view.dims();
        assert_eq!(
            dims.len(),
            2,
            "QWeight {}: expected a 2-D tensor, got {dims:?}",
            view.name()
        );
        let (n_in, n_out) = (dims[0], dims[1]);
        if let Err(e) = QMatrix::new(view.ty(), view.bytes(), n_out, n_in) {
            panic!("QWeight {}: {e}", view.name());
        }
        Self {
            inner: Arc::new(Inner {
                view,
                n_out,
                n_in,
                cpu,
                f32_activations: false,
                interleaved: OnceLock::new(),
                #[cfg(any(feature = "wgpu", feature = "cuda"))]
                device_blocks: Default::default(),
            }),
        }
    }

    /// The same weight, with the forward product computed on f32 activations against the
    /// blocks dequantized on the fly (`on`), or on activations quantized to 8-bit blocks the
    /// way llama.cpp does (`!on`, the default and the fast path). The f32 path is the exact
    /// function whose gradient the backward pass computes; gradient checks use it.
    pub fn with_f32_activations(&self, on: bool) -> QWeight {
        let i = &self.inner;
        QWeight {
            inner: Arc::new(Inner {
                view: i.view.clone(),
                n_out: i.n_out,
                n_in: i.n_in,
                cpu: i.cpu.clone(),
                f32_activations: on,
                interleaved: OnceLock::new(),
                // A new weight value: on a GPU it uploads its (identical) blocks at first use.
                #[cfg(any(feature = "wgpu", feature = "cuda"))]
                device_blocks: Default::default(),
            }),
        }
    }

    /// Whether the forward product uses f32 activations.
    pub fn f32_activations(&self) -> bool {
        self.inner.f32_activations
    }

    /// Output features (rows of W).
    pub fn n_out(&self) -> usize {
        self.inner.n_out
    }

    /// Input features (columns of W).
    pub fn n_in(&self) -> usize {
        self.inner.n_in
    }

    /// The storage type of W.
    pub fn ty(&self) -> GgmlType {
        self.inner.view.ty()
    }

    /// The tensor's name in the model file.
    pub fn name(&self) -> &str {
        self.inner.view.name()
    }

    /// The raw ggml blocks of W, borrowed from the map.
    pub fn bytes(&self) -> &[u8] {
        self.inner.view.bytes()
    }

    /// W as the kernels' checked matrix view (`n_out × n_in`).
    pub fn matrix(&self) -> QMatrix<'_> {
        let i = &*self.inner;
        QMatrix::new(i.view.ty(), i.view.bytes(), i.n_out, i.n_in).expect("checked in QWeight::new")
    }

    /// Bytes [`Self::interleaved`] allocates for W on this CPU, whether or not it has run yet
    /// (0 where W's type has no interleaved layout or this CPU no vector kernel for it).
    pub fn interleaved_bytes(&self) -> usize {
        let w = self.matrix();
        if !engram_kernels::interleaved_is_fast(w.ty()) {
            return 0;
        }
        engram_kernels::interleaved_bytes(&w).unwrap_or(0)
    }

    /// W's rows in the interleaved layout for one-activation-row products
    /// ([`engram_kernels::matvec_interleaved`]: the same sums as the scalar reference, about
    /// twice the row kernels' speed), covering the first [`Interleaved::rows`] rows; the rest
    /// stay on the ggml rows. Made at the first call unless [`QWeight::interleave_together`]
    /// made it before (a pass over W's bytes into an owned buffer of the same size: the mapped
    /// file stays the source for every other product) and kept. `None` where W's type has no
    /// such layout or this CPU no vector kernel for it.
    pub fn interleaved(&self) -> Option<Interleaved<'_>> {
        let copy = self
            .inner
            .interleaved
            .get_or_init(|| Self::build_interleaved(&[self]).pop().flatten());
        copy.as_ref()
            .map(|c| Interleaved::new(&self.matrix(), &c.buf.bytes()[c.start..c.start + c.len]))
    }

    /// Builds the interleaved copies ([`QWeight::interleaved`]) of those of `weights` that have
    /// none yet, one after another in the given order in one buffer backed by huge pages where
    /// the OS gives them ([`HugePageBuffer`]). The fused decoder passes every weight in the
    /// order a token reads them, so a token streams one buffer from end to end: no TLB miss
    /// every 4 KiB, and no prefetcher restarting at each small matrix's own allocation.
    pub fn interleave_together(weights: &[&QWeight]) {
        let mut todo: Vec<&QWeight> = Vec::new();
        for &w in weights {
            if w.inner.interleaved.get().is_none()
                && !todo.iter().any(|t| Arc::ptr_eq(&t.inner, &w.inner))
            {
                todo.push(w);
            }
        }
        for (w, copy) in todo.iter().zip(Self::build_interleaved(&todo)) {
            // Another thread may have built this one meanwhile: then its copy stays.
            let _ = w.inner.interleaved.set(copy);
        }
    }

    /// The interleaved copies of `weights` (`None` where there is none), in one buffer.
    fn build_interleaved(weights: &[&QWeight]) -> Vec<Option<InterleavedCopy>> {
        let sizes: Vec<usize> = weights.iter().map(|w| w.interleaved_bytes()).collect();
        let mut starts = Vec::with_capacity(sizes.len());
        let mut total = 0;
        for &n in &sizes {
            starts.push(total);
            total += n.next_multiple_of(64);
        }
        if total == 0 {
            return weights.iter().map(|_| None).collect();
        }
        let mut buf = HugePageBuffer::zeroed(total);
        for ((w, &n), &start) in weights.iter().zip(&sizes).zip(&starts) {
            if n > 0 {
                engram_kernels::interleave(&w.matrix(), &mut buf.bytes_mut()[start..start + n]);
            }
        }
        let buf = Arc::new(buf);
        sizes
            .iter()
            .zip(&starts)
            .map(|(&len, &start)| {
                (len > 0).then(|| InterleavedCopy {
                    buf: buf.clone(),
                    start,
                    len,
                })
            })
            .collect()
    }

    /// The copies of W's blocks on GPU devices.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    pub(crate) fn device_blocks(&self) -> &super::device_blocks::DeviceBlocks {
        &self.inner.device_blocks
    }

    /// How many GPU devices hold a copy of W's blocks: each device uploads them once, at the
    /// first product that runs there, and keeps them (0 when only CPU backends ran it).
    pub fn device_uploads(&self) -> usize {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            self.inner.device_blocks.uploads()
        }
        #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
        {
            0
        }
    }

    /// The kernels' CPU context (thread pool).
    pub fn cpu(&self) -> &CpuContext {
        &self.inner.cpu
    }

    /// `y (m × n_out) = x (m × n_in) · Wᵀ` on the CPU kernels.
    pub fn matmul_f32(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let Inner {
            view,
            n_out,
            n_in,
            cpu,
            f32_activations,
            ..
        } = &*self.inner;
        assert_eq!(
            x.len(),
            m * n_in,
            "{}: input is not m × {n_in}",
            view.name()
        );
        assert_eq!(
            y.len(),
            m * n_out,
            "{}: output is not m × {n_out}",
            view.name()
        );
        if *f32_activations {
            cpu.qmatmul_f32(&self.matrix(), x, m, y);
        } else {
            cpu.qmatmul(&self.matrix(), x, m, y);
        }
    }

    /// `dx (m × n_in) = dy (m × n_out) · W` on the CPU kernels (the input gradient).
    pub fn matmul_t_f32(&self, dy: &[f32], m: usize, dx: &mut [f32]) {
        let Inner {
            view,
            n_out,
            n_in,
            cpu,
            ..
        } = &*self.inner;
        assert_eq!(
            dy.len(),
            m * n_out,
            "{}: gradient is not m × {n_out}",
            view.name()
        );
        assert_eq!(
            dx.len(),
            m * n_in,
            "{}: input gradient is not m × {n_in}",
            view.name()
        );
        cpu.qmatmul_t(&self.matrix(), dy, m, dx);
    }

    /// Dequantizes the rows `ids` of W into `out` (`ids.len() × n_in`): an embedding lookup.
    ///
    /// # Panics
    /// When an id is out of range or `out` has the wrong length.
    pub fn dequantize_rows(&self, ids: &[u32], out: &mut [f32]) {
        let Inner {
            view, n_out, n_in, ..
        } = &*self.inner;
        assert_eq!(
            out.len(),
            ids.len() * n_in,
            "{}: output is not ids × {n_in}",
            view.name()
        );
        let w = self.matrix();
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(*n_in)) {
            let id = id as usize;
            assert!(
                id < *n_out,
                "{}: row {id} out of range ({n_out} rows)",
                view.name()
            );
            engram_kernels::dequantize_row(w.ty(), w.row(id), dst);
        }
    }
}

/// The quantized linear operation, implemented per backend: the CPU backends call engram's
/// kernels on the mapped bytes; the CubeCL backend (wgpu, CUDA) runs GPU kernels over the same
/// blocks uploaded once per device (`backend/cube.rs`).
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait QuantLinearOps: Backend {
    /// `y = x · Wᵀ`: `x` is `[.., n_in]`, `y` is `[.., n_out]`.
    fn quant_linear(x: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self>;
    /// `dx = dy · W`: `dy` is `[.., n_out]`, `dx` is `[.., n_in]`.
    fn quant_linear_t(dy: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self>;
}

/// Applies the frozen quantized layer: `x · Wᵀ` over the last dimension of `x`.
///
/// # Panics
/// When the last dimension of `x` is not `weight.n_in()`.
pub fn quant_linear<const D: usize>(x: Tensor<D>, weight: &QWeight) -> Tensor<D> {
    Product::Forward.on_tensor(x, weight)
}

/// The transposed product `dy · W` over the last dimension of `dy`.
///
/// # Panics
/// When the last dimension of `dy` is not `weight.n_out()`.
pub fn quant_linear_t<const D: usize>(dy: Tensor<D>, weight: &QWeight) -> Tensor<D> {
    Product::Transposed.on_tensor(dy, weight)
}

/// Runs `product` on the CPU kernels over an f32 host copy of `x` (last dimension `k_in`),
/// producing a tensor whose last dimension is `k_out` (see [`Product::dims`]). Works on any
/// backend through `TensorData`.
#[allow(dead_code)]
fn host_apply<B: Backend>(x: FloatTensor<B>, product: Product, weight: &QWeight) -> FloatTensor<B> {
    let (k_in, k_out) = product.dims(weight);
    let device = burn::backend::TensorMetadata::device(&x);
    let data = block_on(B::float_into_data(x)).expect("reading a CPU tensor cannot fail");
    let mut shape = data.shape().clone();
    let xs = data
        .try_to_vec::<f32>()
        .expect("float tensor converts to f32");
    let m = xs.len() / k_in;
    let mut y = vec![0f32; m * k_out];
    product.run_cpu(weight, &xs, m, &mut y);
    *shape.last_mut().expect("at least 1-D") = k_out;
    B::float_from_data(burn::tensor::TensorData::new(y, shape), &device)
}

/// Polls a future that a CPU backend has already completed.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

#[cfg(feature = "flex")]
impl QuantLinearOps for Flex {
    fn quant_linear(x: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        flex_apply(x, Product::Forward, &weight)
    }

    fn quant_linear_t(dy: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        flex_apply(dy, Product::Transposed, &weight)
    }
}

/// Flex: reads the input in place when it is a contiguous f32 tensor (the common case), and
/// hands the output buffer to the tensor without a copy.
#[cfg(feature = "flex")]
fn flex_apply(x: FloatTensor<Flex>, product: Product, weight: &QWeight) -> FloatTensor<Flex> {
    use burn::backend::flex::FlexTensor;
    let (k_in, k_out) = product.dims(weight);
    let x = if x.is_contiguous() {
        x
    } else {
        x.to_contiguous()
    };
    let Some(xs) = x.as_slice::<f32>() else {
        return host_apply::<Flex>(x, product, weight);
    };
    let mut shape = x.layout().shape().clone();
    let m = xs.len() / k_in;
    let mut y = vec![0f32; m * k_out];
    product.run_cpu(weight, xs, m, &mut y);
    let last = shape.num_dims() - 1;
    shape[last] = k_out;
    FlexTensor::from_data(burn::tensor::TensorData::new(y, shape))
}

#[cfg(feature = "ndarray")]
impl QuantLinearOps for NdArray {
    fn quant_linear(x: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        host_apply::<Self>(x, Product::Forward, &weight)
    }

    fn quant_linear_t(dy: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        host_apply::<Self>(dy, Product::Transposed, &weight)
    }
}

/// Which of the two products a node computed (or a GPU kernel launches); its backward is the
/// other one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Product {
    /// `y = x · Wᵀ`, whose input gradient is `dy · W`.
    Forward,
    /// `dx = dy · W`, whose input gradient is `d(dx) · Wᵀ` (second-order terms).
    Transposed,
}

impl Product {
    fn apply<B: QuantLinearOps>(self, x: FloatTensor<B>, weight: QWeight) -> FloatTensor<B> {
        match self {
            Product::Forward => B::quant_linear(x, weight),
            Product::Transposed => B::quant_linear_t(x, weight),
        }
    }

    /// This product over the last dimension of a tensor on any device.
    ///
    /// # Panics
    /// When that dimension is not `k_in` (see [`Product::dims`]).
    fn on_tensor<const D: usize>(self, x: Tensor<D>, weight: &QWeight) -> Tensor<D> {
        let (k_in, _) = self.dims(weight);
        let features = x.dims()[D - 1];
        assert_eq!(
            features,
            k_in,
            "{self:?} product with {}: input has {features} features, W takes {k_in}",
            weight.name()
        );
        let out = self.apply::<burn::backend::Dispatch>(x.into_dispatch(), weight.clone());
        Tensor::from_dispatch(out)
    }

    /// `(k_in, k_out)`: the features of this product's input and output with `weight`.
    pub(crate) fn dims(self, weight: &QWeight) -> (usize, usize) {
        match self {
            Product::Forward => (weight.n_in(), weight.n_out()),
            Product::Transposed => (weight.n_out(), weight.n_in()),
        }
    }

    /// This product on the CPU kernels: `x` is `m × k_in`, `y` is `m × k_out`.
    #[allow(dead_code)] // without a CPU backend only the GPU path runs
    fn run_cpu(self, weight: &QWeight, x: &[f32], m: usize, y: &mut [f32]) {
        match self {
            Product::Forward => weight.matmul_f32(x, m, y),
            Product::Transposed => weight.matmul_t_f32(x, m, y),
        }
    }

    fn adjoint(self) -> Self {
        match self {
            Product::Forward => Product::Transposed,
            Product::Transposed => Product::Forward,
        }
    }
}

/// The backward step of a quantized product: the adjoint product of the incoming gradient. W is
/// frozen, so it is the only state and gets no gradient of its own.
#[derive(Debug)]
struct QuantLinearBackward(Product);

impl<B: Backend + QuantLinearOps> Backward<B, 1> for QuantLinearBackward {
    type State = QWeight;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, self.0.adjoint().apply::<B>(grad, ops.state));
        }
    }
}

/// Runs `product` on the inner backend and records its backward step when `x` is tracked.
fn tracked<B: Backend + QuantLinearOps, C: CheckpointStrategy>(
    product: Product,
    x: FloatTensor<Autodiff<B, C>>,
    weight: QWeight,
) -> FloatTensor<Autodiff<B, C>> {
    match QuantLinearBackward(product)
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = product.apply::<B>(x.into_primitive(), weight.clone());
            prep.finish(weight, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(product.apply::<B>(x.into_primitive(), weight)),
    }
}

impl<B: Backend + QuantLinearOps, C: CheckpointStrategy> QuantLinearOps for Autodiff<B, C> {
    fn quant_linear(x: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        tracked::<B, C>(Product::Forward, x, weight)
    }

    fn quant_linear_t(dy: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        tracked::<B, C>(Product::Transposed, dy, weight)
    }
}
