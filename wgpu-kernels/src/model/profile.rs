//! Per-dispatch profiling: each dispatch in its own submission, timed by the caller's clock,
//! to see where a forward pass spends its time.

use super::GpuModel;
use crate::error::EngineError;

/// One dispatch of a profiled forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    /// The graph node the dispatch belongs to (several dispatches may share one).
    pub node: String,
    /// The kernel it ran: `"ConvInt"`, `"Quantize"`, `"GemmInt"`, ….
    pub kernel: &'static str,
    /// Seconds from submission to completion, by the caller's clock.
    pub seconds: f64,
}

impl GpuModel {
    /// Times every dispatch on its own (one submission each, waiting for each): where the
    /// time of a forward pass goes, one row per dispatch in execution order.
    /// `now` is the caller's clock in seconds (`Instant` natively, `performance.now()` in a
    /// browser, where the engine has no clock of its own). Each time includes one submission's
    /// round trip, so it is for comparing layers, not for summing into a latency.
    pub async fn profile_with(
        &self,
        nchw: &[f32],
        n: usize,
        now: &dyn Fn() -> f64,
    ) -> Result<Vec<ProfileRow>, EngineError> {
        if n == 0
            || n > self.info.max_batch
            || nchw.len() != n * self.info.input_shape.iter().product::<usize>()
        {
            return Err(EngineError::Input(format!(
                "profile takes 1..={} NCHW images",
                self.info.max_batch
            )));
        }
        let _guard = self.busy.lock().await;
        self.gpu
            .queue
            .write_buffer(&self.nchw_target, 0, bytemuck::cast_slice(nchw));
        self.gpu.queue.write_buffer(
            &self.run_uniform,
            0,
            bytemuck::bytes_of(&[n as u32, 0, 0, 0]),
        );
        let mut out = Vec::new();
        for s in self.entry_nchw.iter().chain(&self.body) {
            let mut encoder = self
                .gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                s.dispatch(&mut pass, n);
            }
            let (tx, rx) = futures_channel::oneshot::channel();
            let start = now();
            self.gpu.queue.submit([encoder.finish()]);
            self.gpu.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            #[cfg(not(target_arch = "wasm32"))]
            self.gpu
                .device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| EngineError::Gpu(e.to_string()))?;
            rx.await
                .map_err(|_| EngineError::DeviceLost("the profiled dispatch was dropped".into()))?;
            out.push(ProfileRow {
                node: s.label.clone(),
                kernel: s.kernel.name(),
                seconds: now() - start,
            });
        }
        self.gpu.check_alive()?;
        Ok(out)
    }

    /// [`GpuModel::profile_with`] on the native clock.
    ///
    /// ```no_run
    /// # fn run(model: &efq_engine::GpuModel) -> Result<(), efq_engine::EngineError> {
    /// let [c, h, w] = model.info().input_shape;
    /// let images = vec![0.0f32; c * h * w];
    /// model.profile(&images, 1)?; // the first pass also compiles pipelines
    /// for row in model.profile(&images, 1)? {
    ///     println!("{:>8.3} ms  {:<16} {}", row.seconds * 1e3, row.kernel, row.node);
    /// }
    /// # Ok(()) }
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(&self, nchw: &[f32], n: usize) -> Result<Vec<ProfileRow>, EngineError> {
        let t0 = std::time::Instant::now();
        pollster::block_on(self.profile_with(nchw, n, &|| t0.elapsed().as_secs_f64()))
    }
}
