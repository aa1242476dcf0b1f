//! Every kernel, with either dot4 prelude, is valid WGSL according to naga.

use super::Kernel;
use crate::gpu::Dot4;

#[test]
fn every_kernel_passes_naga_validation_with_both_dot4_preludes() {
    for kernel in Kernel::ALL {
        for dot4 in [Dot4::Native, Dot4::Polyfill] {
            let source = kernel.source(dot4);
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                panic!(
                    "{kernel:?} ({dot4:?}) does not parse:\n{}",
                    e.emit_to_string(&source)
                )
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "{kernel:?} ({dot4:?}) is invalid:\n{}",
                    e.emit_to_string(&source)
                )
            });
            assert!(
                module
                    .entry_points
                    .iter()
                    .any(|e| e.name == kernel.entry_point()),
                "{kernel:?} has no entry point '{}'",
                kernel.entry_point()
            );
        }
    }
}

#[test]
fn polyfill_prelude_avoids_the_packed_builtins() {
    for kernel in Kernel::ALL {
        let source = kernel.source(Dot4::Polyfill);
        assert!(
            !source.contains("dot4I8Packed(") && !source.contains("unpack4xI8("),
            "{kernel:?}"
        );
    }
}
