//! A weight's ggml blocks on each GPU device it has run on (features `wgpu`, `cuda`).
//!
//! Its own module so that the weight (`qlinear`) can own one without naming the GPU kernels
//! (`cube`) while the kernels read the weight: `cube → qlinear → device_blocks` and
//! `cube → device_blocks`, no arrow back.

use std::sync::Mutex;

use burn_cubecl::CubeDevice;
use burn_cubecl::tensor::CubeTensor;
use cubecl::server::Handle;

/// A weight's blocks on each device it has been used on, uploaded at first use.
///
/// A model normally runs on one device, so this is a short list searched linearly. The handles
/// keep the device memory alive; dropping the owning `QWeight` frees it.
#[derive(Default)]
pub(crate) struct DeviceBlocks {
    uploads: Mutex<Vec<(CubeDevice, Handle)>>,
}

impl DeviceBlocks {
    /// The blocks `bytes` on `tensor`'s device, uploading them (padded to whole 32-bit words, see
    /// [`padded_words`]) the first time. `bytes` must be the same every call: they are the
    /// owning weight's.
    pub(crate) fn handle_for(&self, bytes: &[u8], tensor: &CubeTensor) -> Handle {
        let mut uploads = self
            .uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, handle)) = uploads.iter().find(|(dev, _)| *dev == tensor.device) {
            return handle.clone();
        }
        let handle = tensor.client.create_from_slice(&padded_words(bytes));
        uploads.push((tensor.device.clone(), handle.clone()));
        handle
    }

    /// How many devices hold this weight's blocks (for tests: an upload happens once).
    pub(crate) fn uploads(&self) -> usize {
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

/// The bytes rounded up to whole 32-bit words: the kernels read `u32`s (WGSL has no byte loads),
/// and Q4_0/Q8_0 blocks (18 and 34 bytes) do not end on a word boundary.
fn padded_words(bytes: &[u8]) -> Vec<u8> {
    let mut words = Vec::with_capacity(bytes.len().next_multiple_of(4));
    words.extend_from_slice(bytes);
    words.resize(bytes.len().next_multiple_of(4), 0);
    words
}
