//! What every command shares: the flags that pick the model, the device, the threads and the
//! output form ([`SharedArgs`]), and helpers that name the file in every file error.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use engram::harness::fetch::resolve_model_with;
use engram::runtime::backend::{self, Device};
use engram::runtime::engine::Engine;
use engram::runtime::progress::Progress;

/// The CLI's error: anything printable, its causes chained.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The flags of every command that runs the model.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Model and output")]
pub struct SharedArgs {
    /// The GGUF model, or a safetensors checkpoint (a directory or `.safetensors` file) (default:
    /// $ENGRAM_MODEL, else the user's cache, else fetched with pip).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Backend device; wgpu and cuda need a build with that feature (else an error naming it).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// CPU threads for the quantized kernels (0 = all cores).
    #[arg(long, default_value_t = 0, value_parser = thread_count)]
    pub threads: usize,
    /// Print the command's result as JSON on stdout (no progress bars).
    #[arg(long)]
    pub json: bool,
}

/// A backend device (`engram::runtime::backend::device_by_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The default CPU backend.
    Cpu,
    /// burn's flex CPU backend.
    Flex,
    /// burn's ndarray CPU backend.
    Ndarray,
    /// A GPU through wgpu (Vulkan, Metal, DX12): `--features wgpu`.
    Wgpu,
    /// An NVIDIA GPU: `--features cuda`.
    Cuda,
}

impl SharedArgs {
    /// The device named by `--device` (an error naming the cargo feature when it is not built).
    pub fn device(&self) -> Result<Device> {
        let name = self.device.to_possible_value().expect("no skipped devices");
        Ok(backend::device_by_name(name.get_name())?)
    }

    /// The model file: `--model`, else `ENGRAM_MODEL`, else the cache (fetching it once).
    pub fn model_path(&self, progress: &dyn Progress) -> Result<PathBuf> {
        Ok(resolve_model_with(self.model.as_deref(), progress)?)
    }

    /// Loads the model on `--device` (with autodiff when `autodiff`: training and editing).
    pub fn load(&self, autodiff: bool, progress: &dyn Progress) -> Result<(Engine, PathBuf)> {
        let path = self.model_path(progress)?;
        let device = self.device()?;
        let device = if autodiff { device.autodiff() } else { device };
        let engine = Engine::load(&path, &device, self.threads).map_err(|e| in_file(&path, e))?;
        Ok((engine, path))
    }
}

/// `error` with `path` in front, unless its message already names the path.
pub fn in_file(path: &Path, error: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    let (shown, message) = (path.display().to_string(), error.to_string());
    if message.contains(&shown) {
        message.into()
    } else {
        format!("{shown}: {message}").into()
    }
}

/// [`std::fs::read_to_string`], its error naming the path.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| in_file(path, e))
}

/// [`std::fs::write`], its error naming the path.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| in_file(path, e))
}

/// The JSON in the file at `path`, any error naming the path.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_str(&read_to_string(path)?).map_err(|e| in_file(path, e))
}

/// Most CPU threads `--threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// A thread count: 0 (all cores) to [`MAX_THREADS`].
pub fn thread_count(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        Ok(n) => Err(format!("{n} threads: at most {MAX_THREADS}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A count flag that must be at least 1 (`--max-tokens 0` would still generate one token).
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A float flag that must be finite and not negative (temperatures, learning rates).
pub fn finite_non_negative(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    match v.is_finite() && v >= 0.0 {
        true => Ok(v),
        false => Err(format!("{v} is not a finite value >= 0")),
    }
}

/// A float flag that must be finite and positive (learning rates).
pub fn finite_positive(s: &str) -> std::result::Result<f32, String> {
    let v = finite_non_negative(s)?;
    match v > 0.0 {
        true => Ok(v),
        false => Err("must be above 0".into()),
    }
}

/// A LoRA alpha: finite, positive, at most [`engram::adapters::lora::MAX_ALPHA`].
pub fn lora_alpha(s: &str) -> std::result::Result<f32, String> {
    let v = finite_positive(s)?;
    let max = engram::adapters::lora::MAX_ALPHA;
    match v <= max {
        true => Ok(v),
        false => Err(format!("{v} is above {max}")),
    }
}

/// A probability in `(0, 1]` (top-p).
pub fn probability(s: &str) -> std::result::Result<f32, String> {
    let v = finite_non_negative(s)?;
    match v > 0.0 && v <= 1.0 {
        true => Ok(v),
        false => Err(format!("{v} is not in (0, 1]")),
    }
}

/// A probability in `[0, 1)` (dropout).
pub fn dropout(s: &str) -> std::result::Result<f32, String> {
    let v = finite_non_negative(s)?;
    match v < 1.0 {
        true => Ok(v),
        false => Err(format!("{v} is not in [0, 1)")),
    }
}

/// A memory budget in MiB, as bytes: at least 1 MiB, and `MiB << 20` must not overflow.
pub fn budget_mib(s: &str) -> std::result::Result<u64, String> {
    let mib: u64 = s.parse().map_err(|e| format!("{e}"))?;
    if mib == 0 {
        return Err("must be at least 1".into());
    }
    mib.checked_mul(1 << 20)
        .map(|_| mib)
        .ok_or_else(|| format!("{mib} MiB does not fit in 64-bit bytes"))
}

/// Peak resident set of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
