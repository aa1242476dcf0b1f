//! Every way the engine can fail, each naming what is wrong. The engine never panics on bad
//! input or a missing/lost GPU; it returns one of these.

/// What went wrong, in words a user can act on (`Display` gives the whole message).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No adapter on the requested backends (the reason wgpu gave).
    #[error(
        "no GPU adapter found ({0}); on Linux without a GPU install Mesa's software Vulkan driver \
         (apt-get install mesa-vulkan-drivers libvulkan1), or use the CPU backend"
    )]
    NoAdapter(String),
    /// The adapter exists but would not open a device.
    #[error("cannot open the GPU device on {adapter}: {reason}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },
    /// A buffer the model needs exceeds the device's limits, even at batch 1.
    #[error("model too large for this device: {what} needs {needed} but the device allows {limit}")]
    TooLarge {
        /// Which buffer.
        what: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the device allows.
        limit: u64,
    },
    /// The model uses something the engine has no kernel for.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The images handed over do not fit the model (count, size, layout).
    #[error("bad input: {0}")]
    Input(String),
    /// The device is gone (driver reset, tab backgrounded, GPU removed); open a new [`crate::Gpu`].
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// Any other failure wgpu reported.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The model file or graph was refused when loaded (it names the node and the field).
    #[error(transparent)]
    Model(#[from] efq_shared::Error),
}
