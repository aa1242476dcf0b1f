//! Every way the engine can fail, each naming what is wrong. The engine never panics on bad
//! input or a missing/lost GPU; it returns one of these.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "no GPU adapter found ({0}); on Linux without a GPU install Mesa's software Vulkan driver \
         (apt-get install mesa-vulkan-drivers libvulkan1), or use the CPU backend"
    )]
    NoAdapter(String),
    #[error("cannot open the GPU device on {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },
    #[error("model too large for this device: {what} needs {needed} but the device allows {limit}")]
    TooLarge {
        what: String,
        needed: u64,
        limit: u64,
    },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error(transparent)]
    Model(#[from] efq_shared::Error),
}
